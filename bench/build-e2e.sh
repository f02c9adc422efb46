#!/usr/bin/env bash
# End-to-end `flakectl build` of 200 trivial derivations (10 layers of width 20, each depending
# on two of the layer before; the graph of bench/build-graph.sh) with -j2, side by side in one
# run with the reference:
#   reference: nix build -f graph.nix --no-link -j2 --option sandbox false --option cores 1
#              (evaluates, writes the 200 .drvs, builds; its own store)
#   flaked:    flakectl build -f graph.nix --no-link -j2 against a running release flaked
#              (evaluation, .drv writing and sandboxed builds in the daemon's store, a diverted
#              store under a temporary root; process start and connection included)
# hyperfine runs both RUNS times; its --prepare writes graph.nix with a fresh nonce before every
# run, so every derivation is new for both every time. Before timing, one run of each checks
# that both print the same output paths (--print-out-paths) and that the reference verifies our
# store (nix-store --verify --check-contents). Prints medians, min/max and the ratio.
#
# Usage: bench/build-e2e.sh   (env: RUNS=10 PROFILE=release SKIP_BUILD=1 ORACLE=… CARGO_TARGET_DIR=…
#                              KEEP=1 keeps the temporary directory)
set -euo pipefail
cd "$(dirname "$0")/.."
RUNS=${RUNS:-10}
ORACLE=${ORACLE:-/work/shared/oracle/nix}
command -v hyperfine >/dev/null || { echo "bench/build-e2e.sh needs hyperfine (apt-get install hyperfine)" >&2; exit 1; }
command -v python3 >/dev/null || { echo "bench/build-e2e.sh needs python3" >&2; exit 1; }
PROFILE=${PROFILE:-release}
[ -n "${SKIP_BUILD:-}" ] || cargo build --profile "$PROFILE" -q -p flaked -p flakectl
case "$PROFILE" in dev) dir=debug ;; *) dir=$PROFILE ;; esac
BIN=$(cd "${CARGO_TARGET_DIR:-target}/$dir" && pwd)

tmp=$(mktemp -d /tmp/build-e2e.XXXXXX)
sock=$tmp/sock
cleanup() {
  [ -n "${daemon:-}" ] && kill "$daemon" 2>/dev/null && wait "$daemon" 2>/dev/null
  if [ -z "${KEEP:-}" ]; then chmod -R u+w "$tmp" 2>/dev/null; rm -rf "$tmp"; else echo "kept $tmp" >&2; fi
}
trap cleanup EXIT

# sandbox-paths for /bin/sh and the libraries it loads.
sp="/bin/sh=$(readlink -f /bin/sh)"
for lib in $(ldd /bin/sh | grep -o '/[^ ]*'); do sp="$sp $lib=$(readlink -f "$lib")"; done
"$BIN/flaked" --socket "$sock" --config /dev/null --idle-exit 30m --store-root "$tmp/root" \
  --cache-dir "$tmp/cache" --max-jobs 2 --sandbox-paths "$sp" 2>"$tmp/flaked.log" &
daemon=$!
for _ in $(seq 200); do [ -S "$sock" ] && break; sleep 0.05; done

# The graph, with a fresh nonce each time it is written.
gen=$PWD/bench/lib/gen-graph.sh
cd "$tmp"

# Check: same output paths; the reference accepts our store.
"$gen" "$tmp"
"$ORACLE" build -f graph.nix --no-link --print-out-paths -j2 --option sandbox false --option cores 1 \
  2>"$tmp/nix.err" | sort > "$tmp/nix.out" || { cat "$tmp/nix.err" >&2; exit 1; }
"$BIN/flakectl" --socket "$sock" --no-auto-start build -f graph.nix --no-link --print-out-paths -j2 \
  2>"$tmp/ours.err" | sort > "$tmp/ours.out" || { cat "$tmp/ours.err" >&2; exit 1; }
[ "$(wc -l < "$tmp/nix.out")" = 20 ] || { echo "expected 20 outputs" >&2; cat "$tmp/nix.out" >&2; exit 1; }
cmp -s "$tmp/nix.out" "$tmp/ours.out" || { echo "output paths differ" >&2; diff "$tmp/nix.out" "$tmp/ours.out" >&2; exit 1; }
"$ORACLE" --cmd nix-store --store "local?root=$tmp/root" --verify --check-contents >/dev/null 2>"$tmp/verify.err" \
  || { cat "$tmp/verify.err" >&2; exit 1; }
if grep -qi "error\|mismatch\|corrupt" "$tmp/verify.err"; then cat "$tmp/verify.err" >&2; exit 1; fi
# Both print the same messages (derivation list and order, `building` lines aside from order).
grep -c "^building '" "$tmp/ours.err" | grep -qx 200 || { echo "expected 200 'building' lines" >&2; exit 1; }
diff <(sed -n '1,201p' "$tmp/nix.err") <(sed -n '1,201p' "$tmp/ours.err") >/dev/null \
  || echo "note: the 'will be built' lists differ (see $tmp/nix.err, $tmp/ours.err)" >&2

hyperfine -N --style basic --runs "$RUNS" --prepare "$gen $tmp" --export-json "$tmp/times.json" \
  -n nix "$ORACLE build -f graph.nix --no-link -j2 --option sandbox false --option cores 1" \
  -n flakectl "$BIN/flakectl --socket $sock --no-auto-start build -f graph.nix --no-link -j2" \
  >"$tmp/hyperfine.txt"

python3 - "$tmp/times.json" "$RUNS" "$PROFILE" <<'PY'
import json, statistics, sys
res = {r["command"]: r["times"] for r in json.load(open(sys.argv[1]))["results"]}
print(f"build -f graph.nix (200 new derivations, -j2), {sys.argv[2]} runs each, profile {sys.argv[3]}")
print(f"{'':10} {'median ms':>10} {'min ms':>8} {'max ms':>8}")
for name in ("nix", "flakectl"):
    ts = res[name]
    print(f"{name:10} {statistics.median(ts)*1000:10.0f} {min(ts)*1000:8.0f} {max(ts)*1000:8.0f}")
print(f"ratio flakectl/nix (medians): {statistics.median(res['flakectl']) / statistics.median(res['nix']):.2f}x")
PY
