#!/usr/bin/env bash
# Runs nixpkgs' own library tests through flaked's evaluator (the `feval` tool, a `nix eval`
# mirror over flaked_eval::api) and through the reference Nix 2.26, and compares the answers.
#
#   1. lib/tests/misc.nix         (must be `[ ]`; compared as `nix eval --file` output)
#   2. lib/tests/systems.nix      (must be `[ ]`)
#   3. lib/path/tests/unit.nix    (called with { libpath = lib; }; must be `null`)
#   4. lib/tests/misc.nix per test: every runTests case in its own tryEval, listing the names of
#      the cases that fail (diagnostic: shows WHICH tests differ when (1) does)
#   5. lib/tests/modules.sh: its checkConfigOutput / checkConfigError / checkExpression cases,
#      run once with the reference's nix-instantiate and once with a feval-based shim; prints
#      both pass/fail counts, the number of cases on which both agree, and our failing cases.
#
# Usage: scripts/nixpkgs-lib-tests.sh [NIXPKGS_PATH]  (default /work/team/nixpkgs.lib; read-only)
# Env:   FEVAL (default: target-builtins/release/feval, else debug), NIX (the reference),
#        SKIP_MODULES=1 to skip (5), ONLY=misc|systems|path|each|modules.
set -uo pipefail
here=$(cd "$(dirname "$0")/.." && pwd -P)
NIXPKGS=$(cd "${1:-/work/team/nixpkgs.lib}" && pwd -P)
NIX=${NIX:-/work/shared/oracle/nix}
if [ -z "${FEVAL:-}" ]; then
    for c in "$here/target-eval/release/feval" "$here/target-builtins/release/feval" "$here/target/release/feval" "$here/target-builtins/debug/feval" "$here/target/debug/feval"; do
        [ -x "$c" ] && { FEVAL=$c; break; }
    done
fi
[ -x "${FEVAL:-}" ] || { echo "no feval binary; cargo build --release -p flaked-eval --bins" >&2; exit 2; }
LIB=$NIXPKGS/lib
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
status=0
only=${ONLY:-}

# compare NAME ARGS... : evaluates with both (nix eval / feval with the same ARGS) and compares.
compare() {
    local name=$1; shift
    local rc_ref=0 rc_our=0
    (cd "$LIB" && "$NIX" eval "$@") >"$tmp/ref.out" 2>"$tmp/ref.err" || rc_ref=$?
    (cd "$LIB" && "$FEVAL" "$@") >"$tmp/our.out" 2>"$tmp/our.err" || rc_our=$?
    if [ "$rc_ref" = "$rc_our" ] && cmp -s "$tmp/ref.out" "$tmp/our.out"; then
        echo "AGREE    $name: $(head -c 200 "$tmp/our.out" | tr '\n' ' ')"
    else
        status=1
        echo "DIFFER   $name"
        echo "  reference (exit $rc_ref): $(head -c 400 "$tmp/ref.out" | tr '\n' ' ') $(grep -m1 'error:' -A0 "$tmp/ref.err" 2>/dev/null; tail -n 1 "$tmp/ref.err")"
        echo "  flaked    (exit $rc_our): $(head -c 400 "$tmp/our.out" | tr '\n' ' ') $(tail -n 1 "$tmp/our.err")"
    fi
}

want() { [ -z "$only" ] || [ "$only" = "$1" ]; }

want misc && compare "lib/tests/misc.nix" --impure --file tests/misc.nix
want systems && compare "lib/tests/systems.nix" --impure --file tests/systems.nix
want path && compare "lib/path/tests/unit.nix" --impure --expr 'import ./path/tests/unit.nix { libpath = ./.; }'

if want each; then
    cat >"$tmp/each.nix" <<NIX
let
  libdir = $LIB;
  lib0 = import (libdir + "/default.nix");
  runEach = tests: builtins.concatLists (map (name:
    let r = builtins.tryEval (let x = lib0.runTests { \${name} = tests.\${name}; }; in builtins.deepSeq x x);
    in if !r.success then [ name ] else map (f: f.name) r.value
  ) (builtins.attrNames tests));
  lib = lib0 // { runTests = runEach; };
in scopedImport { import = p: if p == libdir + "/default.nix" then lib else import p; } (libdir + "/tests/misc.nix")
NIX
    compare "lib/tests/misc.nix, failing test names, one tryEval per test" --impure --file "$tmp/each.nix"
fi

if want modules && [ -z "${SKIP_MODULES:-}" ]; then
    # A nix-instantiate look-alike over feval (only what modules.sh uses): feval --instantiate
    # prints as nix-instantiate --eval [--json [--strict]] (paths in JSON copied to the store).
    cat >"$tmp/flaked-instantiate" <<SH
#!/usr/bin/env bash
json=(); strict=(); expr=; attr=; file=
while [ \$# -gt 0 ]; do
    case \$1 in
        --timeout) shift 2 ;;
        --option) [ "\$2" = abort-on-warn ] && export NIX_CONFIG="abort-on-warn = \$3"; shift 3 ;;
        --eval-only|--eval|--show-trace|--read-write-mode) shift ;;
        --strict) strict=(--strict); shift ;;
        --json) json=(--json); shift ;;
        -E|--expr) expr=\$2; shift 2 ;;
        -A|--attr) attr=\$2; shift 2 ;;
        *) file=\$1; shift ;;
    esac
done
if [ -n "\$expr" ]; then set -- --expr "\$expr"; else set -- --file "\$file"; fi
[ -n "\$attr" ] && set -- "\$@" "\$attr"
exec "$FEVAL" --impure --instantiate "\${json[@]}" "\${strict[@]}" "\$@"
SH
    cat >"$tmp/ref-instantiate" <<SH
#!/usr/bin/env bash
exec "$NIX" --cmd nix-instantiate "\$@"
SH
    chmod +x "$tmp/flaked-instantiate" "$tmp/ref-instantiate"
    # The reference runs in a chroot that only sees the current directory and /tmp: work on a
    # copy of lib/ under /tmp (both implementations, so that paths in messages are identical).
    mkdir -p "$tmp/nixpkgs" && cp -r "$LIB" "$tmp/nixpkgs/lib"
    MLIB=$tmp/nixpkgs/lib
    # A copy of modules.sh that runs in the copy, uses \$INSTANTIATE and logs failing cases.
    sed -e "s|^DIR=.*|DIR=$MLIB/tests|" \
        -e 's|^    nix-instantiate |    "$INSTANTIATE" |' \
        -e 's|^\(    printf .\\033\[1;31mTEST FAILED.*\)$|\1; echo "$(loc 2)" >>"$FAILLOG"|' \
        "$LIB/tests/modules.sh" >"$tmp/modules.sh"
    for impl in ref flaked; do
        : >"$tmp/$impl.fail"
        INSTANTIATE="$tmp/$impl-instantiate" FAILLOG="$tmp/$impl.fail" \
            bash "$tmp/modules.sh" >"$tmp/$impl.log" 2>&1
        sed -i 's|^.*/modules.sh:||' "$tmp/$impl.fail"
        echo "modules.sh with $impl: $(grep -E '^[0-9]+ (Pass|Fail)$' "$tmp/$impl.log" | tr '\n' ' ')"
    done
    total=$(grep -cE '^(checkConfigOutput|checkConfigError|checkExpression|  *checkConfig)' "$tmp/modules.sh")
    sort -u "$tmp/ref.fail" >"$tmp/ref.s"; sort -u "$tmp/flaked.fail" >"$tmp/flaked.s"
    differ=$(comm -3 "$tmp/ref.s" "$tmp/flaked.s" | wc -l)
    ran=$(( $(grep -cE '^[0-9]+ ' "$tmp/ref.log") ))
    refp=$(grep -E '^[0-9]+ Pass$' "$tmp/ref.log" | cut -d' ' -f1); reff=$(grep -E '^[0-9]+ Fail$' "$tmp/ref.log" | cut -d' ' -f1)
    echo "modules.sh: $((refp + reff)) cases run; flaked and the reference disagree on $differ (by call line)"
    if [ -s "$tmp/flaked.s" ]; then
        echo "failing with flaked (modules.sh line numbers):"
        comm -13 "$tmp/ref.s" "$tmp/flaked.s" | while read -r l; do
            echo "  line $l: $(sed -n "${l}p" "$LIB/tests/modules.sh" | cut -c1-160)"
        done
        status=1
    fi
    : "$total" "$ran"
fi
exit $status
