#!/usr/bin/env bash
# Runs a fuzz target for a while: seeds the corpus with the language corpus and the upstream suite
# (if a Nix checkout is given), then libFuzzer with the Nix token dictionary.
# Needs the nightly toolchain and cargo-fuzz (`cargo install cargo-fuzz`).
# Usage: fuzz/run.sh [TARGET=eval_bytes|eval_structured] [SECONDS=300] [NIX_CHECKOUT]
# Crashes land in fuzz/artifacts/TARGET/; reproduce with `cargo +nightly fuzz run TARGET FILE`.
set -euo pipefail
target=${1:-eval_bytes}
secs=${2:-300}
here=$(cd "$(dirname "$0")" && pwd -P)
cd "$here"
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$here/target}
mkdir -p "corpus/$target"
if [ "$target" = eval_bytes ]; then
    cp -n ../evaluator/tests/lang/*.nix "corpus/$target/" 2>/dev/null || true
    if [ $# -ge 3 ] && [ -d "$3/tests/functional/lang" ]; then
        for f in "$3"/tests/functional/lang/*.nix; do cp -n "$f" "corpus/$target/upstream-$(basename "$f")"; done
    fi
fi
extra=()
# Structured inputs need length right away (libFuzzer otherwise grows the limit from 4 bytes slowly).
[ "$target" = eval_structured ] && extra+=(-len_control=0 -max_len=512)
exec cargo +nightly fuzz run "$target" -j 1 -- -max_total_time="$secs" -timeout=10 -rss_limit_mb=4096 \
    -max_len=4096 -dict="$here/nix.dict" "${extra[@]}"
