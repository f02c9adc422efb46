#!/usr/bin/env bash
# NAR-hash benchmark: flaked-store-tool vs the reference `nix-hash --type sha256` on a
# generated 1 GiB file and a 20,000-small-file tree (fixtures under /tmp, never committed),
# beside the raw SHA-256 speed of this machine on the same file (`sha256sum`, `openssl dgst`;
# the NAR framing adds 112 bytes, so a NAR hash can at best match them).
# Uses hyperfine (apt-get install -y hyperfine) and reports medians.
#   usage: bench/store-nar-hash.sh [RUNS]
set -euo pipefail

RUNS=${1:-5}
NIX=${NIX:-/work/shared/oracle/nix}
# shellcheck source=lib/store-tool.sh
. "$(dirname "$0")/lib/store-tool.sh"

B=${BENCH_DIR:-/tmp/store-bench}
mkdir -p "$B"
if [ ! -f "$B/big.bin" ] || [ "$(stat -c %s "$B/big.bin")" != 1073741824 ]; then
  head -c 1073741824 /dev/urandom > "$B/big.bin"
fi
if [ ! -f "$B/tree.done" ]; then
  rm -rf "$B/tree"
  for d in $(seq 1 100); do
    mkdir -p "$B/tree/d$d"
    for f in $(seq 1 200); do printf 'file %d in dir %d\n' "$f" "$d" > "$B/tree/d$d/f$f"; done
  done
  touch "$B/tree.done"
fi

# Same answer first.
for p in "$B/big.bin" "$B/tree"; do
  ours=$("$TOOL" hash-path "$p")
  theirs=$(cd /tmp && "$NIX" --cmd nix-hash --type sha256 "$p")
  [ "$ours" = "$theirs" ] || { echo "MISMATCH on $p: $ours vs $theirs" >&2; exit 1; }
done

cd /tmp
hyperfine --runs "$RUNS" --warmup 1 --export-json "$B/result.json" \
  -n "flaked 1GiB" "$TOOL hash-path $B/big.bin" \
  -n "nix 1GiB" "$NIX --cmd nix-hash --type sha256 $B/big.bin" \
  -n "raw sha256sum 1GiB" "sha256sum $B/big.bin" \
  -n "raw openssl sha256 1GiB" "openssl dgst -sha256 $B/big.bin" \
  -n "flaked 20k files" "$TOOL hash-path $B/tree" \
  -n "nix 20k files" "$NIX --cmd nix-hash --type sha256 $B/tree" \
  -n "nix startup (empty file)" "$NIX --cmd nix-hash --type sha256 $B/tree.done"
jq -r '.results[] | "\(.command)\tmedian \(.median * 1000 | floor) ms\tuser \(.user * 1000 | floor) ms\tsystem \(.system * 1000 | floor) ms"' "$B/result.json"
