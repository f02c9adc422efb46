#!/usr/bin/env bash
# Regenerates evaluator/tests/flakes/: flake layouts (plain directories with flake.nix files,
# path inputs by relative `path:` references) and what the reference Nix 2.26 answers for them:
#   expected.lock   flake.lock bytes written by `nix flake lock`
#   expected.eval   `nix eval --json .#x` stdout (or the error's first line, prefixed "error")
# The oracle runs on a copy under /tmp (outside any Git work tree, visible in its chroot).
set -euo pipefail
NIX=${NIX:-/work/shared/oracle/nix}
ROOT=$(cd "$(dirname "$0")/.." && pwd)
OUT=$ROOT/evaluator/tests/flakes
rm -rf "$OUT"; mkdir -p "$OUT"

mk() { mkdir -p "$OUT/$1/$(dirname "$2")"; cat > "$OUT/$1/$2"; }

mk no-inputs flake.nix <<'N'
{ description = "no inputs"; outputs = { self }: { x = 1 + 2; }; }
N
mk one-path flake.nix <<'N'
{ inputs.sub.url = "path:./sub"; outputs = { self, sub }: { x = sub.v + 1; }; }
N
mk one-path sub/flake.nix <<'N'
{ outputs = { self }: { v = 41; }; }
N
mk non-flake flake.nix <<'N'
{ inputs.data = { url = "path:./data"; flake = false; };
  outputs = { self, data }: { x = builtins.readFile (data + "/hello.txt"); }; }
N
mk non-flake data/hello.txt <<'N'
hello
N
mk nested flake.nix <<'N'
{ inputs.a.url = "path:./a"; outputs = { self, a }: { x = a.v + a.inputs.b.v; }; }
N
mk nested a/flake.nix <<'N'
{ inputs.b.url = "path:./b"; outputs = { self, b }: { v = b.v * 10; }; }
N
mk nested a/b/flake.nix <<'N'
{ outputs = { self }: { v = 7; }; }
N
mk follows flake.nix <<'N'
{ inputs.a.url = "path:./a"; inputs.c.url = "path:./c";
  inputs.a.inputs.b.follows = "c";
  outputs = { self, a, c }: { x = a.v; }; }
N
mk follows a/flake.nix <<'N'
{ inputs.b.url = "path:./b"; outputs = { self, b }: { v = b.name; }; }
N
mk follows a/b/flake.nix <<'N'
{ outputs = { self }: { name = "b"; }; }
N
mk follows c/flake.nix <<'N'
{ outputs = { self }: { name = "c"; }; }
N
mk top-follows flake.nix <<'N'
{ inputs.a.url = "path:./a"; inputs.b.follows = "a";
  outputs = { self, a, b }: { x = [ a.v b.v ]; }; }
N
mk top-follows a/flake.nix <<'N'
{ outputs = { self }: { v = "a"; }; }
N
mk self-attrs flake.nix <<'N'
{ description = "self"; outputs = { self }: { x = { t = self._type; hasOut = self ? outPath; names = builtins.attrNames self; }; }; }
N
mk packages-prefix flake.nix <<'N'
{ outputs = { self }: { packages.x86_64-linux.x = "from packages"; x = "top"; }; }
N
mk legacy-prefix flake.nix <<'N'
{ outputs = { self }: { legacyPackages.x86_64-linux.x = "from legacy"; }; }
N
mk input-attrs flake.nix <<'N'
{ inputs.sub = { type = "path"; path = "./sub"; };
  outputs = { self, sub }: { x = sub.v; }; }
N
mk input-attrs sub/flake.nix <<'N'
{ outputs = { self }: { v = "typed"; }; }
N
mk self-outputs flake.nix <<'N'
{ outputs = { self }: { a = 5; x = self.a * 2 + self.outputs.a; }; }
N
mk unsupported-attr flake.nix <<'N'
{ foo = 1; outputs = { self }: { x = 1; }; }
N
mk outputs-not-function flake.nix <<'N'
{ outputs = { x = 1; }; }
N
mk no-outputs flake.nix <<'N'
{ description = "nothing"; }
N
mk stale-lock flake.nix <<'N'
{ inputs.sub.url = "path:./sub"; outputs = { self, sub }: { x = sub.v; }; }
N
mk stale-lock sub/flake.nix <<'N'
{ outputs = { self }: { v = "kept"; }; }
N
# A lock file with an unused entry (dropped) and the used one (kept).
mk stale-lock input.lock <<'N'
{
  "nodes": {
    "old": {
      "locked": {
        "path": "./old",
        "type": "path"
      },
      "original": {
        "path": "./old",
        "type": "path"
      },
      "parent": []
    },
    "root": {
      "inputs": {
        "old": "old",
        "sub": "sub"
      }
    },
    "sub": {
      "locked": {
        "path": "./sub",
        "type": "path"
      },
      "original": {
        "path": "./sub",
        "type": "path"
      },
      "parent": []
    }
  },
  "root": "root",
  "version": 7
}
N

for d in "$OUT"/*/; do
  name=$(basename "$d")
  work=$(mktemp -d /tmp/flake-golden.XXXXXX)
  errs=$(mktemp -d /tmp/flake-golden-err.XXXXXX)
  cp -r "$d/." "$work/"
  [ -f "$work/input.lock" ] && mv "$work/input.lock" "$work/flake.lock"
  if (cd "$work" && "$NIX" flake lock >/dev/null 2>"$errs/lock"); then
    if [ -f "$work/flake.lock" ]; then cp "$work/flake.lock" "$d/expected.lock"; fi
  else
    # The first line of the error, with the temporary directory made generic.
    head -n 1 "$errs/lock" | sed -e "s#$work#FLAKE#g" -e 's#/nix/store/[0-9a-z]\{32\}-#/nix/store/HASH-#g' > "$d/expected.lock-error"
  fi
  if out=$(cd "$work" && "$NIX" eval --json .#x 2>"$errs/eval"); then
    printf '%s\n' "$out" > "$d/expected.eval"
  else
    head -n 1 "$errs/eval" | sed -e "s#$work#FLAKE#g" -e 's#/nix/store/[0-9a-z]\{32\}-#/nix/store/HASH-#g' > "$d/expected.eval-error"
  fi
  rm -rf "$work" "$errs"
done
echo "regenerated $(ls -d "$OUT"/*/ | wc -l) layouts in $OUT"
