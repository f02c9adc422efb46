#!/usr/bin/env bash
# Regenerates every golden file of the language corpus (evaluator/tests/lang/) from the reference
# Nix 2.26 (the oracle). Run it after adding or changing a case; commit the .nix and its goldens.
#
# Layout (read by evaluator/tests/lang.rs):
#   CASE.nix                one case; an optional first line `#!flaked TOKEN...` holds directives:
#                           `json` / `raw` (also check that output mode), `impure` (--impure, the
#                           default of `nix eval --file` anyway; --pure-eval is ignored with --file),
#                           `attr=PATH` (nix eval --file CASE.nix PATH)
#   CASE.out  / CASE.err    `nix eval --file CASE.nix`: stdout (present iff exit code 0) and
#                           stderr (present iff non-empty)
#   CASE.json.out / .err    same with --json (always done when the plain mode succeeded, or on `json`)
#   CASE.raw.out  / .err    same with --raw (only on `raw`)
#   CASE.inst.out / .err    `nix-instantiate --eval --strict CASE.nix` (only on `instantiate`)
# The absolute directory of the corpus is replaced by the placeholder `$DIR` in every golden.
#
# Usage: scripts/regen-lang-goldens.sh [CASE...]     (default: every case)
# Env:   NIX=/path/to/nix (default /work/shared/oracle/nix)
set -euo pipefail
NIX=${NIX:-/work/shared/oracle/nix}
here=$(cd "$(dirname "$0")/.." && pwd -P)
dir="$here/evaluator/tests/lang"
cd "$dir"

if [ $# -gt 0 ]; then cases=("$@"); else
    cases=()
    for f in *.nix; do cases+=("${f%.nix}"); done
fi

tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT

# run MODE CASE ARGS... : runs the oracle, writes CASE[.MODE].out/.err, prints the exit code.
run() {
    local mode=$1 case=$2; shift 2
    local base=$case
    [ "$mode" = nix ] || base="$case.$mode"
    rm -f "$base.out" "$base.err"
    local rc=0
    if [ "$mode" = inst ]; then
        "$NIX" --cmd nix-instantiate --eval --strict "$@" >"$tmp/out" 2>"$tmp/err" </dev/null || rc=$?
    else
        "$NIX" eval "$@" >"$tmp/out" 2>"$tmp/err" </dev/null || rc=$?
    fi
    if [ "$rc" -ne 0 ] && [ "$rc" -ne 1 ]; then
        echo "regen: $case ($mode): unexpected exit code $rc from the oracle" >&2
        cat "$tmp/err" >&2
        exit 1
    fi
    if [ "$rc" -eq 0 ]; then
        # Byte-exact except for the directory placeholder.
        DIR="$dir" perl -pe 's/\Q$ENV{DIR}\E/\$DIR/g' "$tmp/out" >"$base.out"
    fi
    if [ -s "$tmp/err" ]; then
        DIR="$dir" perl -pe 's/\Q$ENV{DIR}\E/\$DIR/g' "$tmp/err" >"$base.err"
    fi
    echo "$rc"
}

n=0
for case in "${cases[@]}"; do
    case=${case%.nix}
    [ -f "$case.nix" ] || { echo "regen: no such case $case.nix" >&2; exit 1; }
    rm -f "$case.out" "$case.err" "$case.json.out" "$case.json.err" "$case.raw.out" "$case.raw.err" \
        "$case.inst.out" "$case.inst.err"
    flags=()
    attr=()
    want_json=0
    want_raw=0
    want_inst=0
    first=$(head -n1 "$case.nix")
    if [[ "$first" == '#!flaked '* ]]; then
        for tok in ${first#\#!flaked }; do
            case "$tok" in
                json) want_json=1 ;;
                raw) want_raw=1 ;;
                instantiate) want_inst=1 ;;
                impure) flags+=(--impure) ;;
                attr=*) attr=("${tok#attr=}") ;;
                *) echo "regen: $case: unknown directive $tok" >&2; exit 1 ;;
            esac
        done
    fi
    rc=$(run nix "$case" "${flags[@]}" --file "$case.nix" "${attr[@]}")
    if [ "$rc" -eq 0 ] || [ "$want_json" -eq 1 ]; then
        run json "$case" "${flags[@]}" --json --file "$case.nix" "${attr[@]}" >/dev/null
    fi
    if [ "$want_raw" -eq 1 ]; then
        run raw "$case" "${flags[@]}" --raw --file "$case.nix" "${attr[@]}" >/dev/null
    fi
    if [ "$want_inst" -eq 1 ]; then
        [ ${#attr[@]} -eq 0 ] || { echo "regen: $case: attr= and instantiate don't mix" >&2; exit 1; }
        run inst "$case" "$case.nix" >/dev/null
    fi
    n=$((n + 1))
done
echo "regenerated goldens of $n cases in $dir"
