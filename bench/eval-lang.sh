#!/usr/bin/env bash
# Language benchmarks, flaked-eval beside the reference Nix 2.26, in one run.
# For each bench/lang/*.nix (or the ones named): checks both print the same value, then hyperfine
# (medians) and /usr/bin/time -v (peak RSS). Our side is bench/lang/runner (release build).
# Usage: bench/eval-lang.sh [CASE.nix...]     Env: NIX (oracle), RUNS (default 5), CARGO_TARGET_DIR
# Note: the reference runs through the oracle wrapper (unshare + chroot), which adds a constant
# start-up cost; the `startup.nix` row measures it for both sides.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd -P)
NIX=${NIX:-/work/shared/oracle/nix}
RUNS=${RUNS:-5}
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$here/../target-lang}
cargo build -q --release --manifest-path "$here/lang/runner/Cargo.toml"
ours="$CARGO_TARGET_DIR/release/flaked-eval-lang-bench"
cd "$here/lang"
if [ $# -gt 0 ]; then files=("$@"); else files=(startup.nix fib25.nix list100k.nix attrs100k.nix fixpoint10k.nix); fi
peak() { /usr/bin/time -f '%M' "$@" 2>&1 >/dev/null | tail -n1; }
printf '%-16s %12s %12s %12s %12s  %s\n' case "nix median" "ours median" "nix peakKB" "ours peakKB" "same output"
for f in "${files[@]}"; do
    want=$("$NIX" eval --file "$f" 2>&1) || true
    got=$("$ours" "$f" 2>&1) || true
    same=no; [ "$want" = "$got" ] && same=yes
    json=$(mktemp)
    hyperfine -N -w 1 -r "$RUNS" -i --export-json "$json" -n nix "$NIX eval --file $f" -n ours "$ours $f" >/dev/null 2>&1
    med() { python3 -c "import json,sys; r=[x for x in json.load(open('$json'))['results'] if x['command']=='$1'][0]; print('%.3fs' % r['median'])"; }
    printf '%-16s %12s %12s %12s %12s  %s\n' "$f" "$(med nix)" "$(med ours)" "$(peak "$NIX" eval --file "$f")" "$(peak "$ours" "$f")" "$same"
    [ "$same" = yes ] || printf '    nix:  %s\n    ours: %s\n' "$(echo "$want" | head -c 200)" "$(echo "$got" | head -c 200)"
    rm -f "$json"
done
