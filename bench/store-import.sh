#!/usr/bin/env bash
# Import benchmark (issue 5): adding a source tree of 20,000 small files to a fresh store —
# what `"${./tree}"` does: recursive NAR hash + copy + canonicalise + register — flaked vs the
# reference, side by side in one hyperfine run. Every run starts from an empty store root
# (removed by --prepare, not timed):
#   flaked:    flaked-store-tool add --root R TREE       (opens/creates the store, imports,
#              makes the object durable (one syncfs) and registers it before exiting)
#   reference: nix-instantiate --eval --read-write-mode --store local?root=R -E '"${TREE}"'
# Both must print the same store path (checked first). Fixtures live in /tmp, never committed.
#   usage: bench/store-import.sh [RUNS]        (PROFILE=dev-opt for a quicker, less exact build)
set -euo pipefail

RUNS=${1:-5}
NIX=${NIX:-/work/shared/oracle/nix}
# shellcheck source=lib/store-tool.sh
. "$(dirname "$0")/lib/store-tool.sh"

B=${BENCH_DIR:-/tmp/store-bench}
mkdir -p "$B"
if [ ! -f "$B/tree.done" ]; then
  rm -rf "$B/tree"
  for d in $(seq 1 100); do
    mkdir -p "$B/tree/d$d"
    for f in $(seq 1 200); do printf 'file %d in dir %d\n' "$f" "$d" > "$B/tree/d$d/f$f"; done
  done
  touch "$B/tree.done"
fi
[ "$(find "$B/tree" -type f | wc -l)" = 20000 ] || { echo "fixture is not 20,000 files" >&2; exit 1; }

W=$(mktemp -d /tmp/store-import.XXXXXX)
clean() { chmod -R u+w "$1" 2>/dev/null || true; rm -rf "$1"; }
trap 'clean "$W"' EXIT

# Same answer first (and the reference reads our registration).
ours=$("$TOOL" add --root "$W/ours" --name tree "$B/tree")
theirs=$(cd /tmp && "$NIX" --cmd nix-instantiate --eval --read-write-mode --store "local?root=$W/nix" -E "\"\${$B/tree}\"" | tr -d '"')
[ "$ours" = "$theirs" ] || { echo "MISMATCH: $ours vs $theirs" >&2; exit 1; }
ref_info=$(cd /tmp && "$NIX" --cmd nix-store --store "local?root=$W/ours" -q --hash "$ours")
nix_info=$(cd /tmp && "$NIX" --cmd nix-store --store "local?root=$W/nix" -q --hash "$theirs")
[ "$ref_info" = "$nix_info" ] || { echo "NAR hash MISMATCH: $ref_info vs $nix_info" >&2; exit 1; }
echo "both: $ours ($nix_info)"

cd /tmp
hyperfine --runs "$RUNS" --warmup 1 --export-json "$W/result.json" \
  --prepare "chmod -R u+w $W/ours $W/nix 2>/dev/null; rm -rf $W/ours $W/nix" \
  -n "flaked add (20k files)" "$TOOL add --root $W/ours --name tree $B/tree" \
  -n "nix-instantiate \"\${tree}\" (20k files)" \
     "$NIX --cmd nix-instantiate --eval --read-write-mode --store local?root=$W/nix -E '\"\${$B/tree}\"'" \
  -n "nix start-up (eval 1)" "$NIX --cmd nix-instantiate --eval --read-write-mode --store local?root=$W/nix -E 1"
jq -r '.results[] | "\(.command)\tmedian \(.median * 1000 | floor) ms\tmin \(.min * 1000 | floor) ms\tmax \(.max * 1000 | floor) ms"' "$W/result.json"
