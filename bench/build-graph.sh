#!/usr/bin/env bash
# Builds 200 trivial derivations (10 layers of width 20, each depending on two of the layer
# before) with -j2, side by side in one run:
#   reference: `nix build -f graph.nix --no-link -j2 --option sandbox false --option cores 1`
#              (evaluates, writes the 200 .drvs, builds; its own store);
#   flaked:    store-level driver store/examples/build_drvs.rs: opens a fresh store, adds the
#              200 .drvs (taken from the reference's store afterwards, so both build the very
#              same derivations) and builds them with a BuildPool, sandboxed.
# A fresh nonce per run makes every derivation new for both. Checks that both produce the same
# output paths and that the reference verifies our store
# (`nix-store --store local?root=… --verify --check-contents`). The end-to-end `flakectl build`
# variant belongs to the daemon's benches.
#   bench/build-graph.sh [RUNS]
set -euo pipefail
RUNS=${1:-3}
ORACLE=${ORACLE:-/work/shared/oracle/nix}
here=$(cd "$(dirname "$0")/.." && pwd)
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$here/target-store}
cargo build -q --release -p flaked-store --example build_drvs
bin=$CARGO_TARGET_DIR/release/examples/build_drvs
oracle_root=${ORACLE_ROOT:-/opt/nix-oracle}
work=$(mktemp -d /tmp/build-graph.XXXXXX)
trap 'chmod -R u+w "$work" 2>/dev/null; rm -rf "$work"' EXIT
# sandbox-paths for /bin/sh and the libraries it loads.
sp=(--sandbox-path "/bin/sh=$(readlink -f /bin/sh)")
for lib in $(ldd /bin/sh | grep -o '/[^ ]*'); do sp+=(--sandbox-path "$lib=$(readlink -f "$lib")"); done
for run in $(seq "$RUNS"); do
  nonce="$(date +%s%N)-$run"
  "$here/bench/lib/gen-graph.sh" "$work" "$nonce"
  cd "$work"
  t0=$(date +%s%N)
  "$ORACLE" build -f graph.nix --no-link -j2 --option sandbox false --option cores 1 2>/dev/null
  t1=$(date +%s%N); nix_ms=$(( (t1 - t0) / 1000000 ))
  mapfile -t tops < <("$ORACLE" --cmd nix-instantiate graph.nix 2>/dev/null)
  mapfile -t drvs < <("$ORACLE" --cmd nix-store -qR "${tops[@]}" | grep '\.drv$')
  files=(); for d in "${drvs[@]}"; do files+=("$oracle_root$d"); done
  "$ORACLE" --cmd nix-store -q --outputs "${tops[@]}" | sort > "$work/nix.out"
  rm -rf "$work/root"
  t1=$(date +%s%N)
  "$bin" --root "$work/root" -j 2 "${sp[@]}" --drv "${files[@]}" --target "${tops[@]}" 2>"$work/ours.err" \
    | sort > "$work/ours.out"
  t2=$(date +%s%N)
  # The reference reads our registrations and finds every hash right.
  (cd "$work" && "$ORACLE" --cmd nix-store --store "local?root=$work/root" --verify --check-contents \
    >/dev/null 2>"$work/verify.err") || { cat "$work/verify.err" >&2; exit 1; }
  if grep -qi "error\|mismatch\|corrupt" "$work/verify.err"; then cat "$work/verify.err" >&2; exit 1; fi
  chmod -R u+w "$work/root"; rm -rf "$work/root"
  cmp -s "$work/nix.out" "$work/ours.out" || { echo "output paths differ" >&2; exit 1; }
  ours_ms=$(( (t2 - t1) / 1000000 ))
  echo "run $run: ${#drvs[@]} derivations: nix build $nix_ms ms; flaked (opening the store," \
       "adding the .drvs, building) $ours_ms ms ($(awk "BEGIN{printf \"%.2f\", $ours_ms/$nix_ms}")x):" \
       "$(tr '\n' ';' < "$work/ours.err")"
done
