#!/usr/bin/env bash
# Benchmarks nixpkgs-library evaluation, flaked (feval, release build) beside the reference Nix 2.26
# in one run: hyperfine medians and peak RSS (/usr/bin/time -v).
#   misc     lib/tests/misc.nix (evaluates to [ ]; its tests directory is copied to the store once,
#            later runs only hash it)
#   systems  lib/tests/systems.nix
#   modules  a module-system evaluation: evalModules with ~300 options of assorted types
#            (ints, strings, lists, attrsOf, submodules, enums, mkIf/mkMerge/mkDefault), printed
#            as JSON (strict).
# Then the product path: a release `flaked` on a private socket answering `flakectl eval` (same
# arguments as `nix eval`) run RUNS_DAEMON times (default 20) beside `nix eval`: hyperfine
# medians and the ratio, and the daemon's memory per workload: its RSS before the runs and its
# peak (VmHWM, reset before each workload through /proc/PID/clear_refs) after them, beside
# Nix's peak RSS of one run. Outputs are compared before timing.
# Usage: bench/nixpkgs-lib.sh [NIXPKGS_PATH]
# Env: FEVAL, FLAKED, FLAKECTL, NIX, RUNS (default 5), RUNS_DAEMON (default 20),
#      ONLY=feval|daemon (default both), DAEMON_LOG (keep the daemon's stderr there)
# Build: cargo build --release -p flaked -p flakectl -p flaked-eval --bins
set -euo pipefail
here=$(cd "$(dirname "$0")/.." && pwd -P)
NIXPKGS=$(cd "${1:-/work/team/nixpkgs.lib}" && pwd -P)
NIX=${NIX:-/work/shared/oracle/nix}
BIN=${CARGO_TARGET_DIR:-$here/target}/release
FEVAL=${FEVAL:-$BIN/feval}
FLAKED=${FLAKED:-$BIN/flaked}
FLAKECTL=${FLAKECTL:-$BIN/flakectl}
RUNS=${RUNS:-5}
RUNS_DAEMON=${RUNS_DAEMON:-20}
ONLY=${ONLY:-}
[ -x "$FEVAL" ] || { echo "build first: cargo build --release -p flaked -p flakectl -p flaked-eval --bins (or set FEVAL)" >&2; exit 2; }
command -v hyperfine >/dev/null || { echo "needs hyperfine (apt-get install -y hyperfine)" >&2; exit 2; }
LIB=$NIXPKGS/lib
tmp=$(mktemp -d /tmp/bench-nixpkgs-lib.XXXXXX)
daemon=
trap '[ -n "$daemon" ] && kill "$daemon" 2>/dev/null; [ -n "$daemon" ] && wait "$daemon" 2>/dev/null; rm -rf "$tmp"' EXIT

cat >"$tmp/modules.nix" <<NIX
let
  lib = import $LIB;
  inherit (lib) mkOption types mkIf mkMerge mkDefault;
  n = 60;
  names = prefix: map (i: "\${prefix}\${toString i}") (lib.range 1 n);
  declare = lib.genAttrs;
  sub = types.submodule ({ name, ... }: {
    options.port = mkOption { type = types.port; default = 80; };
    options.host = mkOption { type = types.str; default = name; };
  });
in
(lib.evalModules {
  modules = [
    {
      options = declare (names "int") (_: mkOption { type = types.int; default = 1; })
        // declare (names "str") (_: mkOption { type = types.str; default = "x"; })
        // declare (names "list") (_: mkOption { type = types.listOf types.str; default = [ ]; })
        // declare (names "attrs") (_: mkOption { type = types.attrsOf types.int; default = { }; })
        // declare (names "sub") (_: mkOption { type = types.attrsOf sub; default = { }; })
        // declare (names "enum") (_: mkOption { type = types.enum [ "a" "b" "c" ]; default = "a"; });
    }
    { config = declare (names "int") (k: mkDefault 2); }
    ({ config, ... }: {
      config = mkMerge [
        (declare (names "list") (k: [ k ]))
        (declare (names "attrs") (k: { \${k} = config.int1 + 1; }))
        (declare (names "sub") (k: { a = { }; b.port = 8080; }))
        (mkIf (config.int1 == 2) (declare (names "enum") (k: "b")))
      ];
    })
  ];
}).config
NIX

rss() { # rss LABEL CMD... : peak RSS in MiB of one run
    local label=$1; shift
    /usr/bin/time -v "$@" >/dev/null 2>"$tmp/time" || true
    echo "$label: peak RSS $(awk '/Maximum resident set size/ {printf "%.1f MiB", $NF/1024}' "$tmp/time")"
}

bench() { # bench NAME NIX-EVAL-ARGS...
    local name=$1; shift
    local q_ref q_our
    printf -v q_ref '%q ' "$NIX" eval "$@"
    printf -v q_our '%q ' "$FEVAL" "$@"
    if ! (cd "$LIB" && "$FEVAL" "$@" >/dev/null 2>"$tmp/err"); then
        echo "== $name: flaked cannot evaluate it yet ($(grep -m1 'error' -A0 "$tmp/err" | head -c 200); $(tail -n1 "$tmp/err" | head -c 200)); reference only"
        (cd "$LIB" && hyperfine -N --warmup 1 --runs "$RUNS" --export-json "$tmp/$name.json" -n "nix-2.26 $name" "$q_ref") | grep -E 'Time|Range|±' || true
    else
        echo "== $name"
        (cd "$LIB" && "$FEVAL" "$@" >"$tmp/our.out" 2>/dev/null; "$NIX" eval "$@" >"$tmp/ref.out" 2>/dev/null) || true
        if cmp -s "$tmp/our.out" "$tmp/ref.out"; then echo "  outputs identical"; else echo "  OUTPUTS DIFFER"; fi
        (cd "$LIB" && hyperfine -N --warmup 1 --runs "$RUNS" --export-json "$tmp/$name.json" \
            -n "nix-2.26 $name" "$q_ref" -n "flaked $name" "$q_our") | grep -vE '^\s*$' || true
        (cd "$LIB" && rss "flaked   $name" "$FEVAL" "$@")
    fi
    (cd "$LIB" && rss "nix-2.26 $name" "$NIX" eval "$@")
    python3 - "$tmp/$name.json" <<'PY'
import json, sys
for r in json.load(open(sys.argv[1]))["results"]:
    print(f"  median {r['command'].split()[0] if False else ''}{r.get('command')[:60]:60s} {r['median']*1000:9.1f} ms")
PY
}

status() { awk -v k="$2:" '$1 == k {printf "%.1f", $2/1024}' "/proc/$1/status"; }

bench_daemon() { # bench_daemon NAME NIX-EVAL-ARGS...
    local name=$1; shift
    local q_ref q_our
    printf -v q_ref '%q ' "$NIX" eval "$@"
    printf -v q_our '%q ' "$FLAKECTL" --socket "$sock" --no-auto-start eval "$@"
    echo "== daemon $name"
    if ! (cd "$LIB" && "$FLAKECTL" --socket "$sock" --no-auto-start eval "$@" >"$tmp/our.out" 2>"$tmp/err"); then
        echo "  flakectl cannot evaluate it: $(head -c 300 "$tmp/err")"
        return
    fi
    (cd "$LIB" && "$NIX" eval "$@" >"$tmp/ref.out" 2>/dev/null) || true
    if cmp -s "$tmp/our.out" "$tmp/ref.out"; then echo "  outputs identical"; else echo "  OUTPUTS DIFFER"; fi
    local before
    before=$(status "$daemon" VmRSS)
    echo 5 >"/proc/$daemon/clear_refs"
    (cd "$LIB" && hyperfine -N --warmup 2 --runs "$RUNS_DAEMON" --export-json "$tmp/d-$name.json" \
        -n "nix-2.26 $name" "$q_ref" -n "flakectl $name" "$q_our") | grep -vE '^\s*$' || true
    echo "  flaked daemon: RSS before ${before} MiB, peak during the runs (VmHWM) $(status "$daemon" VmHWM) MiB, RSS after $(status "$daemon" VmRSS) MiB"
    (cd "$LIB" && rss "  nix-2.26 $name (one run)" "$NIX" eval "$@")
    python3 - "$tmp/d-$name.json" <<'PY'
import json, sys
rs = json.load(open(sys.argv[1]))["results"]
m = {r["command"].split()[0]: r["median"] * 1000 for r in rs}
ref, our = m["nix-2.26"], m["flakectl"]
print(f"  medians: nix-2.26 {ref:.1f} ms, flakectl/flaked {our:.1f} ms, ratio flaked/nix {our / ref:.2f}x")
PY
}

if [ "$ONLY" != daemon ]; then
    bench misc --impure --file tests/misc.nix
    bench systems --impure --file tests/systems.nix
    bench modules --impure --json --file "$tmp/modules.nix"
fi

if [ "$ONLY" != feval ]; then
    [ -x "$FLAKED" ] && [ -x "$FLAKECTL" ] || { echo "build first: cargo build --release -p flaked -p flakectl (or set FLAKED, FLAKECTL)" >&2; exit 2; }
    sock=$tmp/sock
    "$FLAKED" --socket "$sock" --config /dev/null --idle-exit 30m --store-root "$tmp/store-root" \
        --cache-dir "$tmp/cache" 2>"${DAEMON_LOG:-$tmp/flaked.log}" &
    daemon=$!
    for _ in $(seq 200); do [ -S "$sock" ] && break; sleep 0.05; done
    [ -S "$sock" ] || { echo "flaked did not start: $(cat "${DAEMON_LOG:-$tmp/flaked.log}")" >&2; exit 1; }
    echo "flaked started: RSS $(status "$daemon" VmRSS) MiB"
    bench_daemon misc --impure --file tests/misc.nix
    bench_daemon systems --impure --file tests/systems.nix
    bench_daemon modules --impure --json --file "$tmp/modules.nix"
fi
