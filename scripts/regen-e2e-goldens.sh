#!/usr/bin/env bash
# Regenerates the golden outputs of the end-to-end search tests (tests/tests/flakes.rs, tests/tests/search.rs) with the
# reference Nix: `nix search` on tests/fixtures/search-flake, stdout and exit status per query.
#   scripts/regen-e2e-goldens.sh   (env: ORACLE=/work/shared/oracle/nix)
set -euo pipefail
cd "$(dirname "$0")/../tests/fixtures/search-flake"
ORACLE=${ORACLE:-/work/shared/oracle/nix}
tmp=$(mktemp -d /tmp/flaked-search-golden.XXXXXX)
trap 'rm -rf "$tmp"' EXIT
cp flake.nix "$tmp/"
run() { # NAME ARGS…
  local name=$1; shift
  (cd "$tmp" && "$ORACLE" --extra-experimental-features 'nix-command flakes' search "$@" \
    >"$OLDPWD/$name.out" 2>"$tmp/err" && echo 0 || echo $?) >"$name.status"
}
run hello . hello
run hello-json . hello --json
run two-terms . 'A program' 'cow'
run excluded . hello --exclude wrapped
run python . '^'
run requests .#python3Packages requests
run none . nothing-matches
# More cases, used by tests/tests/search.rs.
run root-drv .#hello-wrapped hello
run alternation . 'friendly|ASCII'
run multi-exclude . '^' --exclude cow --exclude python
run all-json . '^' --json
run nested .#nested '^'
run upper . 'HELLO' 'GREET'
run version-match . '2\.12'
echo "goldens written in tests/fixtures/search-flake"
