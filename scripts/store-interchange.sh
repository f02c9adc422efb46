#!/usr/bin/env bash
# Interchange check: flaked-store's LocalStore writes a store under a root R, then the
# reference Nix 2.26 reads it (`nix path-info --store local?root=R --json`) and verifies it
# (`nix store verify`: contents vs narHash, content address vs path). Prints one line per
# path and a summary; the output is committed as store/tests/golden/interchange.out.
#   usage: scripts/store-interchange.sh [> store/tests/golden/interchange.out]
set -euo pipefail

NIX=${NIX:-/work/shared/oracle/nix}
REPO=$(cd "$(dirname "$0")/.." && pwd)
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$REPO/target-store}
cargo build -q --manifest-path "$REPO/Cargo.toml" -p flaked-store --bin flaked-store-tool >&2
TOOL=$CARGO_TARGET_DIR/debug/flaked-store-tool

WORK=$(mktemp -d /tmp/store-interchange.XXXXXX)
trap 'chmod -R u+w "$WORK" 2>/dev/null; rm -rf "$WORK"' EXIT
R=$WORK/root
SRC=$WORK/src
mkdir -p "$SRC/tree/sub" "$SRC/tree/empty-dir"
printf 'hello\n' > "$SRC/tree/hello.txt"
: > "$SRC/tree/empty"
printf '#!/bin/sh\necho hi\n' > "$SRC/tree/run.sh"; chmod 755 "$SRC/tree/run.sh"
ln -s hello.txt "$SRC/tree/link"
head -c 100000 /dev/zero | tr '\0' 'y' > "$SRC/tree/sub/big"
printf 'flat file\n' > "$SRC/flat.txt"
printf 'key=value\n' > "$SRC/conf"

paths=()
paths+=("$("$TOOL" add --root "$R" --name tree "$SRC/tree")")
paths+=("$("$TOOL" add --root "$R" --name tree-sha1 --type sha1 "$SRC/tree")")
paths+=("$("$TOOL" add --root "$R" --flat --name flat.txt "$SRC/flat.txt")")
paths+=("$("$TOOL" add --root "$R" --flat --type sha512 --name flat512 "$SRC/flat.txt")")
paths+=("$("$TOOL" add-text --root "$R" conf "$SRC/conf")")
# A text object referring to two others (like builtins.toFile with string context).
printf 'uses %s and %s\n' "${paths[0]}" "${paths[4]}" > "$SRC/refs.txt"
paths+=("$("$TOOL" add-text --root "$R" --ref "${paths[0]}" --ref "${paths[4]}" refs.txt "$SRC/refs.txt")")

cd /tmp
fail=0
for p in "${paths[@]}"; do
  ours=$("$TOOL" path-info --root "$R" "$p")
  theirs=$("$NIX" path-info --store "local?root=$R" --json "$p" \
    | jq -r --arg p "$p" '.[$p] | "\($p) \(.narHash) \(.narSize) [\(.references | join(","))] ca=\(.ca)"')
  ours_cmp=${ours}
  theirs_cmp=${theirs% ca=*}
  if [ "$ours_cmp" = "$theirs_cmp" ]; then verdict=same; else verdict=DIFFERENT; fail=1; fi
  echo "$theirs $verdict"
done
if "$NIX" store verify --store "local?root=$R" "${paths[@]}" 2>"$WORK/verify.err"; then
  echo "nix store verify: ok (${#paths[@]} paths)"
else
  echo "nix store verify: FAILED"; cat "$WORK/verify.err"; fail=1
fi
exit $fail
