#!/usr/bin/env bash
# Freshness-key benchmark: time "check an unchanged 20k-file tree" with the
# persistent index, against hashing it from scratch, and against the reference
# (Nix NAR-hashes the whole tree of a path: flake: `nix hash path`).
# Usage: bench/cache-freshness.sh [FILES]   (needs /work/shared/oracle/nix for the reference line)
set -euo pipefail
cd "$(dirname "$0")/.."
files=${1:-20000}
tree=$(mktemp -d /tmp/flaked-freshness.XXXXXX)
trap 'rm -rf "$tree"' EXIT
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$PWD/target-cache}
cargo run -q --release -p flaked-cache --example freshness_bench -- "$files" "$tree/tree"
if [ -x /work/shared/oracle/nix ]; then
  for i in 1 2 3; do
    start=$(date +%s.%N)
    /work/shared/oracle/nix --extra-experimental-features nix-command hash path "$tree/tree" >/dev/null
    end=$(date +%s.%N)
    echo "reference: nix hash path (run $i): $(echo "$end - $start" | bc) s"
  done
fi
