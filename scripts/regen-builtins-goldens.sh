#!/usr/bin/env bash
# Regenerates the builtins golden files (evaluator/tests/builtins/golden/) from the reference
# Nix 2.26. Cases live in evaluator/tests/builtins/cases.txt, one per line:
#     NAME EXPRESSION                 (pure `nix eval --expr EXPRESSION`)
#     NAME@impure EXPRESSION          (with --impure)
# Blank lines and lines starting with '#' are ignored. `$FIX` in an expression stands for the
# absolute path of evaluator/tests/builtins/fixtures (substituted before evaluation, and the
# path is replaced back by `$FIX` in the goldens).
# Goldens: NAME.out (stdout, iff exit 0) and NAME.err (stderr, iff non-empty).
# Read by evaluator/tests/builtins.rs.
#
# Usage: scripts/regen-builtins-goldens.sh [NAME...]   Env: NIX (default /work/shared/oracle/nix)
set -euo pipefail
NIX=${NIX:-/work/shared/oracle/nix}
here=$(cd "$(dirname "$0")/.." && pwd -P)
dir="$here/evaluator/tests/builtins"
fix="$dir/fixtures"
cd "$dir"
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
want=" $* "
n=0
while IFS= read -r line || [ -n "$line" ]; do
    case "$line" in ''|'#'*) continue ;; esac
    name=${line%% *}
    expr=${line#* }
    flags=()
    if [[ $name == *@impure ]]; then name=${name%@impure}; flags+=(--impure); fi
    if [ $# -gt 0 ] && [[ $want != *" $name "* ]]; then continue; fi
    expr=${expr//\$FIX/$fix}
    rm -f "golden/$name.out" "golden/$name.err"
    rc=0
    "$NIX" eval "${flags[@]}" --expr "$expr" >"$tmp/out" 2>"$tmp/err" </dev/null || rc=$?
    if [ "$rc" -ne 0 ] && [ "$rc" -ne 1 ]; then
        echo "regen: $name: unexpected exit code $rc" >&2; cat "$tmp/err" >&2; exit 1
    fi
    if [ "$rc" -eq 0 ]; then FIX="$fix" perl -pe 's/\Q$ENV{FIX}\E/\$FIX/g' "$tmp/out" >"golden/$name.out"; fi
    if [ -s "$tmp/err" ]; then FIX="$fix" perl -pe 's/\Q$ENV{FIX}\E/\$FIX/g' "$tmp/err" >"golden/$name.err"; fi
    n=$((n + 1))
done <cases.txt
echo "regen: $n cases" >&2
