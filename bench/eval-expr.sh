#!/usr/bin/env bash
# Warm end-to-end latency of `flakectl eval --expr '1 + 1'` (process start, connect, request, answer,
# exit) against the reference `nix eval --expr '1 + 1'`, measured in the same run with hyperfine:
# p50 and p99 over RUNS runs (default 200) each, and the ratio; then the same client with its
# synchronous fast path off (FLAKECTL_NO_FAST_PATH=1: the tonic path), for comparison. A release
# flaked is started on a private socket first and warmed up, so the numbers are those of a daemon
# that is already running.
#
# Usage: bench/eval-expr.sh   (env: RUNS=200 PROFILE=release SKIP_BUILD=1 ORACLE=/work/shared/oracle/nix CARGO_TARGET_DIR=…)
set -euo pipefail
cd "$(dirname "$0")/.."
RUNS=${RUNS:-200}
ORACLE=${ORACLE:-/work/shared/oracle/nix}
EXPR='1 + 1'
command -v hyperfine >/dev/null || { echo "bench/eval-expr.sh needs hyperfine (apt-get install hyperfine)" >&2; exit 1; }
command -v python3 >/dev/null || { echo "bench/eval-expr.sh needs python3" >&2; exit 1; }

PROFILE=${PROFILE:-release}
[ -n "${SKIP_BUILD:-}" ] || cargo build --profile "$PROFILE" -q -p flaked -p flakectl
case "$PROFILE" in dev) dir=debug ;; *) dir=$PROFILE ;; esac
BIN=${CARGO_TARGET_DIR:-target}/$dir
tmp=$(mktemp -d /tmp/flaked-bench.XXXXXX)
sock=$tmp/sock
"$BIN/flaked" --socket "$sock" --config /dev/null --idle-exit 10m 2>"$tmp/flaked.log" &
daemon=$!
trap 'kill "$daemon" 2>/dev/null; wait "$daemon" 2>/dev/null; rm -rf "$tmp"' EXIT
for _ in $(seq 200); do [ -S "$sock" ] && break; sleep 0.05; done
client=("$BIN/flakectl" --socket "$sock" --no-auto-start eval --expr "$EXPR")
ours=$("${client[@]}" 2>&1) || { echo "flakectl failed: $ours" >&2; exit 1; }
ref=$("$ORACLE" eval --expr "$EXPR" 2>&1) || { echo "reference nix failed: $ref" >&2; exit 1; }
[ "$ours" = "$ref" ] || { echo "answers differ: flakectl '$ours' vs nix '$ref'" >&2; exit 1; }

hyperfine -N --style basic --runs "$RUNS" --warmup 20 --export-json "$tmp/times.json" \
  -n flakectl "$BIN/flakectl --socket $sock --no-auto-start eval --expr '$EXPR'" \
  -n nix "$ORACLE eval --expr '$EXPR'" >"$tmp/hyperfine.txt"
# The same client with its synchronous fast path off (every request through tonic).
FLAKECTL_NO_FAST_PATH=1 hyperfine -N --style basic --runs "$RUNS" --warmup 20 \
  --export-json "$tmp/tonic.json" \
  -n flakectl-tonic "$BIN/flakectl --socket $sock --no-auto-start eval --expr '$EXPR'" \
  >>"$tmp/hyperfine.txt"

python3 - "$tmp/times.json" "$RUNS" "$PROFILE" "$tmp/tonic.json" <<'PY'
import json, sys
results = {r["command"]: sorted(r["times"]) for f in (sys.argv[1], sys.argv[4])
           for r in json.load(open(f))["results"]}
def pct(ts, p):
    return ts[min(len(ts) - 1, int(round(p / 100 * (len(ts) - 1))))] * 1000
ours, ref = results["flakectl"], results["nix"]
print(f"eval --expr '1 + 1', warm, {sys.argv[2]} runs each (end to end, including process start), profile {sys.argv[3]}")
print(f"{'':14} {'p50 ms':>8} {'p99 ms':>8} {'min ms':>8}")
for name, ts in (("flakectl", ours), ("flakectl-tonic", results["flakectl-tonic"]), ("nix", ref)):
    print(f"{name:14} {pct(ts, 50):8.2f} {pct(ts, 99):8.2f} {ts[0]*1000:8.2f}")
print(f"ratio nix/flakectl: p50 {pct(ref, 50) / pct(ours, 50):.1f}x, p99 {pct(ref, 99) / pct(ours, 99):.1f}x")
PY
