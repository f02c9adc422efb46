#!/usr/bin/env bash
# Repeated flake queries on a nixpkgs-shaped flake, flaked against the reference Nix, in one run.
#
#   bench/flake-queries.sh            (env: N=20000 RUNS=100 CLIENTS=64 PER_CLIENT=500 PROC_PER_CLIENT=20 RESTARTS=5 PROFILE=release
#                                      SKIP_BUILD=1 ORACLE=/work/shared/oracle/nix NIXPKGS_LIB=…)
#
# 1. generates the flake with bench/gen-nixpkgs-flake.sh (N packages), locks it with the reference and
#    commits the lock file, so both tools see the same clean git flake;
# 2. cold: the first `eval .#PKG.drvPath` of each tool (flaked: a fresh daemon with empty caches);
# 3. warm: RUNS repeated `eval .#PKG.drvPath` and `eval .#PKG.name` end to end (process start
#    included), p50/p99 with hyperfine;
# 4. the first query after a daemon restart (answered from the eval cache on disk), RESTARTS times
#    (default 5) right after the start and as many 3 s after it: medians;
# 5. CLIENTS concurrent gRPC clients (one connection each) × PER_CLIENT warm queries: errors and
#    p50/p99 per request; then CLIENTS concurrent flakectl processes × PROC_PER_CLIENT (default 20);
# 6. warm search (hyperfine medians), then the first search of a restarted daemon (answered from
#    the search index in the eval cache on disk);
# 7. cold search: a fresh daemon with empty caches against nix with an empty eval cache, wall time and
#    peak memory, twice: (a) with flaked's store emptied too, although the reference's store already
#    holds the flake's source from the commands above; (b) the fair comparison the issue asks for
#    ("fresh daemon, empty caches"): flaked keeps its store root, like the reference keeps its store.
# Answers are compared before anything is timed.
set -euo pipefail
cd "$(dirname "$0")/.."
N=${N:-20000}
RUNS=${RUNS:-100}
CLIENTS=${CLIENTS:-64}
PER_CLIENT=${PER_CLIENT:-500}
PROC_PER_CLIENT=${PROC_PER_CLIENT:-20}
ORACLE=${ORACLE:-/work/shared/oracle/nix}
PROFILE=${PROFILE:-release}
command -v hyperfine >/dev/null || { echo "needs hyperfine (apt-get install hyperfine)" >&2; exit 1; }
if [ -z "${SKIP_BUILD:-}" ]; then
  cargo build --profile "$PROFILE" -q -p flaked -p flakectl
  cargo build --profile "$PROFILE" -q -p flaked-tests --example concurrent_queries
fi
case "$PROFILE" in dev) dir=debug ;; *) dir=$PROFILE ;; esac
BIN=$(cd "${CARGO_TARGET_DIR:-target}/$dir" && pwd)
tmp=$(mktemp -d /tmp/flaked-bench-flake.XXXXXX)
# hyperfine -N splits commands on spaces: the reference gets a one-word wrapper.
printf '#!/bin/sh\nexec %q --extra-experimental-features "nix-command flakes" "$@"\n' "$ORACLE" >"$tmp/nix"
chmod +x "$tmp/nix"
nix=("$tmp/nix")
daemon=
cleanup() { [ -n "$daemon" ] && kill "$daemon" 2>/dev/null; wait 2>/dev/null; rm -rf "$tmp"; }
trap cleanup EXIT
bench/gen-nixpkgs-flake.sh "$tmp/gen" "$N" >/dev/null
flake=$tmp/gen/flake
cd "$flake"
"${nix[@]}" flake lock 2>/dev/null
git add flake.lock && git -c user.name=bench -c user.email=bench@localhost commit -q -m lock
pkg=$(ls pkgs/by-name/*/ | grep -v : | grep . | sed -n "$((N / 2))p")
[ -n "$pkg" ] || pkg=$(ls pkgs/by-name/*/ | grep -v : | grep . | head -1)

sock=$tmp/sock
start_daemon() {
  "$BIN/flaked" --socket "$sock" --config /dev/null --idle-exit 30m --cache-dir "$tmp/cache" \
    --store-root "$tmp/store-root" 2>>"$tmp/flaked.log" &
  daemon=$!
  for _ in $(seq 400); do [ -S "$sock" ] && return; sleep 0.05; done
  echo "flaked did not start" >&2; exit 1
}
ctl=("$BIN/flakectl" --socket "$sock" --no-auto-start)
ms() { python3 -c 'import sys,time; print(f"{(time.time()-float(sys.argv[1]))*1000:.0f}")' "$1"; }

echo "flake: $N packages (nixpkgs-shaped, lib as a git input), query: .#$pkg.drvPath, profile $PROFILE"

t=$(date +%s.%N); ref=$("${nix[@]}" eval ".#$pkg.drvPath" 2>/dev/null); ref_cold=$(ms "$t")
start_daemon
t=$(date +%s.%N); ours=$("${ctl[@]}" eval ".#$pkg.drvPath" 2>/dev/null); our_cold=$(ms "$t")
[ "$ours" = "$ref" ] || { echo "answers differ: flakectl '$ours' vs nix '$ref'" >&2; exit 1; }
ours_name=$("${ctl[@]}" eval ".#$pkg.name" 2>/dev/null); ref_name=$("${nix[@]}" eval ".#$pkg.name" 2>/dev/null)
[ "$ours_name" = "$ref_name" ] || { echo "names differ: '$ours_name' vs '$ref_name'" >&2; exit 1; }
echo "cold first query:  flakectl ${our_cold} ms   nix ${ref_cold} ms"

hyperfine -N --style none --runs "$RUNS" --warmup 3 --export-json "$tmp/warm.json" \
  -n flakectl-drvPath "${ctl[*]} eval .#$pkg.drvPath" \
  -n nix-drvPath "${nix[*]} eval .#$pkg.drvPath" \
  -n flakectl-name "${ctl[*]} eval .#$pkg.name" \
  -n nix-name "${nix[*]} eval .#$pkg.name" >/dev/null 2>&1
python3 - "$tmp/warm.json" <<'PY'
import json, sys
res = {r["command"]: sorted(r["times"]) for r in json.load(open(sys.argv[1]))["results"]}
pct = lambda ts, p: ts[min(len(ts) - 1, int(round(p / 100 * (len(ts) - 1))))] * 1000
for q in ("drvPath", "name"):
    o, r = res[f"flakectl-{q}"], res[f"nix-{q}"]
    print(f"warm .{q:8}  flakectl p50 {pct(o,50):7.2f} ms p99 {pct(o,99):7.2f} ms   "
          f"nix p50 {pct(r,50):7.1f} ms p99 {pct(r,99):7.1f} ms   ratio p50 {pct(r,50)/pct(o,50):.0f}x")
PY

# RESTARTS restarts each: a query sent as soon as the socket exists (while the daemon re-arms the
# remembered tree: it keys the tree itself), and one sent once the re-arming is done.
restart_query() { # $1: seconds to wait after the start; appends microseconds to the array named $2
  kill "$daemon"; wait "$daemon" 2>/dev/null || true; daemon=
  start_daemon
  sleep "$1"
  local t0 t1
  local -n times=$2
  t0=$(date +%s%N); "${ctl[@]}" eval ".#$pkg.drvPath" >/dev/null 2>&1; t1=$(date +%s%N)
  times+=($(( (t1 - t0) / 1000 )))
}
median() { tr ' ' '\n' | sort -n | awk '{ v[NR] = $1 } END { print v[int((NR + 1) / 2)] }'; }
right=() armed=()
for _ in $(seq "${RESTARTS:-5}"); do restart_query 0 right; done
# the restarted daemon watches and keys the remembered tree in the background
for _ in $(seq "${RESTARTS:-5}"); do restart_query 3 armed; done
echo "first query right after a daemon restart (while it re-arms the tree): flakectl median $(echo "${right[*]}" | median) us (runs: ${right[*]})"
echo "first query after a daemon restart, tree re-armed: flakectl median $(echo "${armed[*]}" | median) us (runs: ${armed[*]}; answered from the eval cache on disk)"

"$BIN/examples/concurrent_queries" "$sock" "$flake" ".#$pkg.drvPath" "$CLIENTS" "$PER_CLIENT" \
  | sed 's/^/gRPC clients (one connection each): /'
python3 - "$BIN/flakectl" "$sock" "$pkg" "$CLIENTS" "$PROC_PER_CLIENT" <<'PY'
import subprocess, sys, time, threading
ctl, sock, pkg, clients, per = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4]), int(sys.argv[5])
lat, errors, lock = [], [0], threading.Lock()
def client():
    mine, bad = [], 0
    for _ in range(per):
        t = time.perf_counter()
        r = subprocess.run([ctl, "--socket", sock, "--no-auto-start", "eval", f".#{pkg}.drvPath"],
                           capture_output=True)
        mine.append((time.perf_counter() - t) * 1000)
        bad += r.returncode != 0
    with lock:
        lat.extend(mine); errors[0] += bad
t0 = time.perf_counter()
ts = [threading.Thread(target=client) for _ in range(clients)]
[t.start() for t in ts]; [t.join() for t in ts]
lat.sort()
pct = lambda p: lat[min(len(lat) - 1, int(round(p / 100 * (len(lat) - 1))))]
print(f"flakectl processes: {clients} clients x {per} warm queries: {errors[0]} errors, p50 {pct(50):.1f} ms, p99 {pct(99):.1f} ms, "
      f"{len(lat) / (time.perf_counter() - t0):.0f} queries/s (process start included)")
PY

if "${ctl[@]}" search . "$pkg" >/dev/null 2>"$tmp/search.err"; then
  ours_s=$("${ctl[@]}" search . "$pkg" 2>/dev/null); ref_s=$("${nix[@]}" search . "$pkg" 2>/dev/null)
  [ "$ours_s" = "$ref_s" ] || { echo "search answers differ: flakectl '$ours_s' vs nix '$ref_s'" >&2; exit 1; }
  [ "$("${ctl[@]}" search . '^' --json 2>/dev/null | md5sum)" = "$("${nix[@]}" search . '^' --json 2>/dev/null | md5sum)" ] \
    || { echo "search '^' --json answers differ" >&2; exit 1; }
  hyperfine -N --style none --runs 20 --warmup 2 --export-json "$tmp/search.json" \
    -n flakectl "${ctl[*]} search . $pkg" -n nix "${nix[*]} search . $pkg" \
    -n flakectl-all "${ctl[*]} search . ^ --json" >/dev/null 2>&1
  python3 - "$tmp/search.json" <<'PY'
import json, sys
res = {r["command"]: r["median"] * 1000 for r in json.load(open(sys.argv[1]))["results"]}
print(f"warm search: flakectl median {res['flakectl']:.1f} ms   nix median {res['nix']:.1f} ms"
      f"   (flakectl, every package as JSON: {res['flakectl-all']:.1f} ms)")
PY
  kill "$daemon"; wait "$daemon" 2>/dev/null || true; daemon=
  start_daemon
  sleep 3 # the restarted daemon watches and keys the remembered tree in the background
  t0=$(date +%s%N); "${ctl[@]}" search . "$pkg" >/dev/null 2>&1; t1=$(date +%s%N)
  echo "first search after a daemon restart: flakectl $(( (t1 - t0) / 1000 )) us (answered from the search index in the eval cache on disk)"
else
  echo "search: not measured ($(head -1 "$tmp/search.err"))"
fi

# Cold search: a fresh daemon with empty caches, against nix with an empty eval cache; wall time and
# peak memory (flaked: the daemon's VmHWM plus the client's; nix: its max RSS).
cold_search() { # LABEL
  start_daemon
  t0=$(date +%s%N); "${ctl[@]}" search . "$pkg" >/dev/null 2>&1; t1=$(date +%s%N)
  our_cold_search=$(( (t1 - t0) / 1000000 ))
  our_rss=$(awk '/VmHWM/ {print $2}' "/proc/$daemon/status")
  kill "$daemon"; wait "$daemon" 2>/dev/null || true; daemon=
  rm -rf "$tmp/xdg"; mkdir -p "$tmp/xdg"
  t0=$(date +%s%N)
  XDG_CACHE_HOME=$tmp/xdg /usr/bin/time -f %M -o "$tmp/nix-rss" "${nix[@]}" search . "$pkg" >/dev/null 2>&1
  t1=$(date +%s%N)
  ref_cold_search=$(( (t1 - t0) / 1000000 ))
  echo "cold search ($1): flakectl ${our_cold_search} ms, daemon peak RSS $((our_rss / 1024)) MiB   nix ${ref_cold_search} ms, peak RSS $(( $(cat "$tmp/nix-rss") / 1024 )) MiB"
}
[ -n "$daemon" ] && { kill "$daemon"; wait "$daemon" 2>/dev/null || true; daemon=; }
rm -rf "$tmp/cache"
cold_search "fair: empty caches, both stores keep the flake's source"
rm -rf "$tmp/cache" "$tmp/store-root"
cold_search "flaked's store emptied too, the reference's not"
