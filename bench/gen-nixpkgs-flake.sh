#!/usr/bin/env bash
# Generates a nixpkgs-shaped flake for the warm-tree, cache and search benchmarks.
#
#   bench/gen-nixpkgs-flake.sh OUT_DIR [N]
#
# OUT_DIR/lib   : nixpkgs' library as its own flake (copied from $NIXPKGS_LIB, default
#                 /work/team/nixpkgs.lib — a checkout of github:nix-community/nixpkgs.lib);
# OUT_DIR/flake : the benchmark flake, with `lib` as a path input and N packages (default 20000)
#                 in a by-name tree (pkgs/by-name/<2-letter shard>/<name>/package.nix). The package
#                 set is a fixed point built with lib.fix and lib.callPackageWith, exposed as
#                 legacyPackages.x86_64-linux; each package is a real derivation (builder /bin/sh)
#                 with pname, version, meta.description and up to three dependencies on packages
#                 with smaller numbers. Both directories are git repositories with everything
#                 committed, so they are clean git flakes; flake.lock is created by whichever tool
#                 locks first (the benchmark locks with the reference and copies the lock).
#
# Deterministic: the same N and OUT_DIR give the same bytes. Nothing here needs the network.
set -euo pipefail
out=${1:?usage: gen-nixpkgs-flake.sh OUT_DIR [N]}
n=${2:-20000}
src=${NIXPKGS_LIB:-/work/team/nixpkgs.lib}
[ -f "$src/lib/default.nix" ] || { echo "NIXPKGS_LIB=$src is not a nixpkgs.lib checkout" >&2; exit 1; }

rm -rf "$out"
mkdir -p "$out/lib" "$out/flake/pkgs/by-name"
cp -r "$src/flake.nix" "$src/lib" "$out/lib/"
[ -f "$src/COPYING" ] && cp "$src/COPYING" "$out/lib/"

out=$(cd "$out" && pwd)
cat >"$out/flake/flake.nix" <<EOF
{
  description = "A nixpkgs-shaped flake for flaked's benchmarks";

  inputs.lib.url = "git+file://$out/lib";

  outputs = { self, lib }:
    let
      mkPkgs = system: import ./pkgs { lib = lib.lib; inherit system; };
    in
    {
      legacyPackages.x86_64-linux = mkPkgs "x86_64-linux";
    };
}
EOF

cat >"$out/flake/pkgs/default.nix" <<'EOF'
{ lib, system }:
let
  byName = ./by-name;
  shards = builtins.readDir byName;
  packageFiles = lib.concatMapAttrs
    (shard: _: lib.mapAttrs (name: _: byName + "/${shard}/${name}/package.nix")
      (builtins.readDir (byName + "/${shard}")))
    shards;
  stdenv = import ./stdenv.nix { inherit lib system; };
in
lib.fix (self:
  { inherit lib stdenv; callPackage = lib.callPackageWith self; }
  // lib.mapAttrs (name: file: self.callPackage file { }) packageFiles)
EOF

cat >"$out/flake/pkgs/stdenv.nix" <<'EOF'
{ lib, system }:
{
  mkDerivation = { pname, version, buildInputs ? [ ], meta ? { }, ... }:
    let
      drv = derivation {
        name = "${pname}-${version}";
        inherit system pname version buildInputs;
        builder = "/bin/sh";
        args = [ "-c" "echo ${lib.escapeShellArg pname} > $out" ];
      };
    in
    drv // { inherit pname version meta; };
}
EOF

python3 - "$out/flake/pkgs/by-name" "$n" <<'PY'
import os, sys
root, n = sys.argv[1], int(sys.argv[2])
words = ["alpha", "bravo", "charlie", "delta", "echo", "foxtrot", "golf", "hotel", "india",
         "juliet", "kilo", "lima", "mike", "november", "oscar", "papa", "quebec", "romeo",
         "sierra", "tango", "uniform", "victor", "whiskey", "xray", "yankee", "zulu"]
def name(i):
    return f"{words[i % 26]}-{words[(i // 26) % 26]}-{i:05d}"
for i in range(n):
    pname = name(i)
    deps = sorted({(i * 7 + k * 13) % i for k in range(3)}) if i > 0 else []
    deps = [name(d) for d in deps]
    d = os.path.join(root, pname[:2], pname)
    os.makedirs(d, exist_ok=True)
    args = ", ".join(["stdenv"] + deps)
    inputs = " ".join(deps)
    with open(os.path.join(d, "package.nix"), "w") as f:
        f.write(f"""{{ {args} }}:
stdenv.mkDerivation {{
  pname = "{pname}";
  version = "{1 + i % 5}.{i % 11}.{i % 7}";
  buildInputs = [ {inputs} ];
  meta.description = "Benchmark package number {i} ({words[i % 26]} {words[(i // 26) % 26]})";
}}
""")
PY

for repo in "$out/lib" "$out/flake"; do
  git -C "$repo" init -q -b main
  git -C "$repo" add -A
  git -C "$repo" -c user.name=bench -c user.email=bench@localhost -c commit.gpgsign=false \
    commit -q -m "generated" --date "2026-01-01T00:00:00Z"
done
echo "generated $n packages in $out/flake (lib: $out/lib)"
