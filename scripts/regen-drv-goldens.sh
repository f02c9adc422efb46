#!/usr/bin/env bash
# Regenerates the derivation goldens of evaluator/tests/derivations.rs with the reference
# Nix 2.26 (the oracle):
#   golden/NAME.json   {"drvPath":…,"outputs":{…}} of case NAME of cases.nix (compact JSON, as
#                      builtins.toJSON prints it)
#   golden/NAME.drv    the .drv bytes Nix wrote for the case (read from the oracle's store)
#   exprs/NAME.out/.err/.code   stdout, stderr and exit code of `nix eval --expr "$(cat NAME.nix)"`
# Fixture trees come from fixtures.sh in a fresh directory under /tmp (names matter, locations
# do not: imported paths are named after their base name).
set -euo pipefail
cd "$(dirname "$0")/.."
ORACLE=${ORACLE:-/work/shared/oracle/nix}
ORACLE_ROOT=${ORACLE_ROOT:-/opt/nix-oracle}
DIR=evaluator/tests/derivations
FIX=$(mktemp -d /tmp/flaked-drv-fixtures.XXXXXX)
trap 'rm -rf "$FIX"' EXIT
sh "$DIR/fixtures.sh" "$FIX"

rm -rf "$DIR/golden"
mkdir -p "$DIR/golden"
ALL=$(cd "$DIR" && "$ORACLE" eval --impure --json --expr "import ./harness.nix { fixtures = $FIX; }")
echo "$ALL" | jq -r 'to_entries[] | "\(.key) \(.value.drvPath)"' |
  while read -r name drv; do
    echo "$ALL" | jq -c ".[\"$name\"]" | tr -d '\n' > "$DIR/golden/$name.json"
    cp "$ORACLE_ROOT$drv" "$DIR/golden/$name.drv"
    chmod 644 "$DIR/golden/$name.drv"
  done

for f in "$DIR"/exprs/*.nix; do
  base=${f%.nix}
  expr=$(cat "$f")
  set +e
  (cd /tmp && "$ORACLE" eval --expr "$expr") > "$base.out" 2> "$base.err"
  echo $? > "$base.code"
  set -e
done
echo "cases: $(ls "$DIR"/golden/*.json | wc -l), exprs: $(ls "$DIR"/exprs/*.nix | wc -l)"
