#!/usr/bin/env bash
# Locking and evaluating one attribute of a flake with many inputs, flaked against the reference
# Nix, side by side in one hyperfine run.
#
#   bench/flake-lock.sh      (env: INPUTS=30 FILES=20 RUNS=10 PROFILE=release SKIP_BUILD=1
#                             ORACLE=/work/shared/oracle/nix CARGO_TARGET_DIR=… KEEP=1 keeps the
#                             generated flake, the caches and the daemon for profiling)
#
# The flake (generated under /tmp) is a plain directory (a `path:` flake) with INPUTS inputs, half
# `path:/abs/dir` and half `git+file:///abs/repo` (a committed repository each), every input a
# flake of its own with FILES small files besides flake.nix; `x` sums one value of each input, so
# every input is fetched, called and evaluated. Each timed run deletes flake.lock first, so every
# run locks all inputs and writes flake.lock (`eval .#x` = lock + fetch + call + evaluate):
#   cold  — empty caches: the reference with a fresh `--store` directory and XDG_CACHE_HOME;
#           flaked with a fresh `--store-root` and `--cache-dir`, and no daemon running: the timed
#           `flakectl eval .#x` starts the daemon itself (process start included);
#   warm  — every input already fetched: the same stores and caches kept from the previous run
#           (the reference keeps its store, fetcher and eval caches; flaked keeps its running
#           daemon, store root and fetcher cache).
# Before timing, both tools' answers and their flake.lock bytes are compared.
set -euo pipefail
cd "$(dirname "$0")/.."
INPUTS=${INPUTS:-30}
FILES=${FILES:-20}
RUNS=${RUNS:-10}
ORACLE=${ORACLE:-/work/shared/oracle/nix}
PROFILE=${PROFILE:-release}
command -v hyperfine >/dev/null || { echo "needs hyperfine (apt-get install hyperfine)" >&2; exit 1; }
[ -n "${SKIP_BUILD:-}" ] || cargo build --profile "$PROFILE" -q -p flaked -p flakectl
case "$PROFILE" in dev) dir=debug ;; *) dir=$PROFILE ;; esac
BIN=$(cd "${CARGO_TARGET_DIR:-target}/$dir" && pwd)
tmp=$(mktemp -d /tmp/flaked-bench-lock.XXXXXX)
cleanup() {
  [ -z "${KEEP:-}" ] || { echo "kept $tmp" >&2; return; }
  "$BIN/flakectl" --socket "$tmp/sock" daemon stop >/dev/null 2>&1 || true
  wait_gone
  chmod -R u+w "$tmp" 2>/dev/null || true
  rm -rf "$tmp"
}
trap cleanup EXIT

# --- the flake --------------------------------------------------------------------------------
export GIT_AUTHOR_NAME=bench GIT_AUTHOR_EMAIL=bench@localhost GIT_COMMITTER_NAME=bench \
  GIT_COMMITTER_EMAIL=bench@localhost GIT_CONFIG_NOSYSTEM=1 GIT_CONFIG_GLOBAL=/dev/null \
  GIT_AUTHOR_DATE='1700000000 +0000' GIT_COMMITTER_DATE='1700000000 +0000'
flake=$tmp/flake
mkdir -p "$flake" "$tmp/inputs"
decls=
sum=
for i in $(seq -w 1 "$INPUTS"); do
  n=$((10#$i))
  if [ $((n % 2)) -eq 1 ]; then name=p$i; else name=g$i; fi
  d=$tmp/inputs/$name
  mkdir -p "$d/lib"
  printf '{ description = "input %s"; outputs = { self }: { v = %d; lib = import ./lib/f1.nix; }; }\n' \
    "$name" "$n" >"$d/flake.nix"
  for f in $(seq 1 "$FILES"); do
    printf '# file %d of input %s\n{ a = %d; b = "%s"; }\n' "$f" "$name" "$f" "$(printf 'x%.0s' $(seq 1 64))" \
      >"$d/lib/f$f.nix"
  done
  if [ "$name" = "p$i" ]; then
    decls+="  inputs.$name.url = \"path:$d\";"$'\n'
  else
    git -C "$d" init -q -b main
    git -C "$d" add -A
    git -C "$d" commit -q -m "input $name"
    decls+="  inputs.$name.url = \"git+file://$d\";"$'\n'
  fi
  sum+=" inputs.$name.v"
done
cat >"$flake/flake.nix" <<EOF
{
  description = "$INPUTS inputs";
$decls
  outputs = inputs@{ self, ... }: { x = builtins.foldl' builtins.add 0 [$sum ]; };
}
EOF

# --- the tools --------------------------------------------------------------------------------
# hyperfine -N splits commands on spaces: each tool and each preparation is a one-word script.
cat >"$tmp/nix" <<EOF
#!/bin/sh
XDG_CACHE_HOME=$tmp/nix-cache exec $ORACLE --extra-experimental-features 'nix-command flakes' \\
  --store $tmp/nix-store "\$@"
EOF
# flakectl starts the daemon (FLAKED_BIN) when none answers on its socket; the daemon takes its
# store root and cache directory from the environment it inherits.
cat >"$tmp/ours" <<EOF
#!/bin/sh
FLAKED_BIN=$BIN/flaked FLAKED_STORE_ROOT=$tmp/store-root FLAKED_CACHE_DIR=$tmp/cache \\
  XDG_CONFIG_HOME=$tmp/config exec $BIN/flakectl --socket $tmp/sock --daemon-idle-exit 30m "\$@"
EOF
# Waits until the daemon that served $tmp/sock is gone (its pid is in the socket's lock file).
wait_gone() {
  local pid
  pid=$( (tr -dc 0-9 <"$tmp/sock.lock") 2>/dev/null || true)
  [ -n "$pid" ] || return 0
  for _ in $(seq 200); do kill -0 "$pid" 2>/dev/null || return 0; sleep 0.05; done
}
cat >"$tmp/prep-nix-cold" <<EOF
#!/bin/sh
chmod -R u+w $tmp/nix-store 2>/dev/null; rm -rf $tmp/nix-store $tmp/nix-cache $flake/flake.lock
EOF
cat >"$tmp/prep-ours-cold" <<EOF
#!/bin/bash
$BIN/flakectl --socket $tmp/sock daemon stop >/dev/null 2>&1
$(declare -f wait_gone); tmp=$tmp; wait_gone
chmod -R u+w $tmp/store-root $tmp/cache 2>/dev/null; rm -rf $tmp/store-root $tmp/cache $flake/flake.lock
EOF
printf '#!/bin/sh\nrm -f %s/flake.lock\n' "$flake" >"$tmp/prep-warm"
chmod +x "$tmp"/nix "$tmp"/ours "$tmp"/prep-*

# --- same answers, same lock files ------------------------------------------------------------
cd "$flake"
"$tmp/prep-nix-cold"
ref=$("$tmp/nix" eval .#x 2>"$tmp/nix.err") || { cat "$tmp/nix.err" >&2; exit 1; }
cp flake.lock "$tmp/nix.lock"
"$tmp/prep-ours-cold"
ours=$("$tmp/ours" eval .#x 2>"$tmp/ours.err") || { cat "$tmp/ours.err" >&2; exit 1; }
[ "$ours" = "$ref" ] || { echo "answers differ: flakectl '$ours' vs nix '$ref'" >&2; exit 1; }
cmp -s flake.lock "$tmp/nix.lock" || { diff "$tmp/nix.lock" flake.lock >&2; echo "flake.lock differs" >&2; exit 1; }
echo "flake: $INPUTS inputs ($(ls "$tmp/inputs" | grep -c '^p') path:, $(ls "$tmp/inputs" | grep -c '^g') git+file:), $FILES files each; x = $ours; flake.lock identical; profile $PROFILE"

# --- timing -----------------------------------------------------------------------------------
hyperfine -N --style none --runs "$RUNS" --export-json "$tmp/cold.json" \
  --prepare "$tmp/prep-ours-cold" -n flakectl "$tmp/ours eval .#x" \
  --prepare "$tmp/prep-nix-cold" -n nix "$tmp/nix eval .#x" >/dev/null 2>&1
# Warm: one untimed run each fills the caches, then every run re-locks from them.
"$tmp/prep-warm"; "$tmp/nix" eval .#x >/dev/null 2>&1
"$tmp/prep-warm"; "$tmp/ours" eval .#x >/dev/null 2>&1
hyperfine -N --style none --runs "$RUNS" --export-json "$tmp/warm.json" \
  --prepare "$tmp/prep-warm" -n flakectl "$tmp/ours eval .#x" \
  --prepare "$tmp/prep-warm" -n nix "$tmp/nix eval .#x" >/dev/null 2>&1
python3 - "$tmp/cold.json" "$tmp/warm.json" <<'PY'
import json, sys
for name, f in (("cold", sys.argv[1]), ("warm", sys.argv[2])):
    res = {r["command"]: r for r in json.load(open(f))["results"]}
    o, r = res["flakectl"], res["nix"]
    print(f"{name}: flakectl median {o['median']*1000:7.1f} ms (min {o['min']*1000:6.1f})   "
          f"nix median {r['median']*1000:7.1f} ms (min {r['min']*1000:6.1f})   "
          f"flakectl/nix {o['median']/r['median']:.2f}x")
PY
