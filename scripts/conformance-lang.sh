#!/usr/bin/env bash
# Runs Nix's own language test-suite (tests/functional/lang of a NixOS/nix 2.26 checkout) through
# flaked-eval and prints the counts: parse-okay parsed, parse-fail failed, eval-fail failed cleanly,
# eval-okay exact, plus every failing case classified.
#
# Usage: scripts/conformance-lang.sh PATH_TO_NIX_CHECKOUT [FILTER]
#   FILTER: only cases whose name contains it.
# Env: FLAKED_CONFORMANCE_REPORT=FILE also writes the report there;
#      FLAKED_CONFORMANCE_STRICT=1 makes panics/hangs fail the run.
# The checkout is only read, never modified (the upstream driver writes .out/.err files; we don't).
set -euo pipefail
[ $# -ge 1 ] || { echo "usage: $0 PATH_TO_NIX_CHECKOUT [FILTER]" >&2; exit 2; }
lang="$1/tests/functional/lang"
[ -d "$lang" ] || { echo "$0: no $lang" >&2; exit 2; }
here=$(cd "$(dirname "$0")/.." && pwd -P)
cd "$here"
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$here/target-lang}
export FLAKED_NIX_LANG_DIR="$lang"
[ $# -ge 2 ] && export FLAKED_CONFORMANCE_FILTER="$2"
exec cargo test -q -p flaked-eval --test conformance -- --nocapture --test-threads=1
