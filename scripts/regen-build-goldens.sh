#!/usr/bin/env bash
# Regenerates store/tests/build/golden/<case>.json from the reference Nix 2.26: each case of
# store/tests/build/corpus.nix is instantiated and realised by the oracle with the sandbox off
# (`--option sandbox false --option cores 1`, its own store), and the golden file records the
# .drv ATerms of the closure and, for every output, its NAR hash, NAR size and references.
# store/tests/build_golden.rs rebuilds the same .drv files with flaked's sandboxed builder and
# compares. Needs python3 and the oracle (/work/shared/oracle/nix or $ORACLE).
set -euo pipefail
ORACLE=${ORACLE:-/work/shared/oracle/nix}
cd "$(dirname "$0")/../store/tests/build"
mkdir -p golden
cases=(chain diamond graph50 multi multiUser tree fodFlat fodRecursive fodUser passAsFile structured envDump refsGraph refsGraphStructured)
for c in "${cases[@]}"; do
  drv=$("$ORACLE" --cmd nix-instantiate corpus.nix -A "$c" 2>/dev/null)
  "$ORACLE" --cmd nix-store --realise "$drv" --option sandbox false --option cores 1 >/dev/null 2>&1
  # shellcheck disable=SC2016
  "$ORACLE" --cmd sh -c '
    for d in $(nix-store -qR "$0" | grep "\.drv$"); do
      printf "DRV %s\n" "$d"; cat "$d"; printf "\n"
      for o in $(nix-store -q --outputs "$d"); do
        printf "OUT %s %s %s %s\n" "$d" "$o" "$(nix-store -q --hash "$o")" "$(nix-store -q --size "$o")"
        for r in $(nix-store -q --references "$o"); do printf "REF %s %s\n" "$o" "$r"; done
      done
    done' "$drv" > "golden/$c.raw"
  python3 - "$c" "$drv" <<'PY'
import json, sys
case, target = sys.argv[1], sys.argv[2]
drvs, outs, drv_outputs = {}, {}, {}
lines = open(f"golden/{case}.raw").read().split("\n")
i = 0
while i < len(lines):
    l = lines[i]
    if l.startswith("DRV "):
        drvs[l[4:]] = lines[i + 1]
        i += 2
        continue
    if l.startswith("OUT "):
        _, d, o, h, n = l.split(" ")
        drv_outputs.setdefault(d, []).append(o)
        outs[o] = {"narHash": h, "narSize": int(n), "references": []}
    elif l.startswith("REF "):
        _, o, r = l.split(" ")
        outs[o]["references"].append(r)
    i += 1
json.dump({"target": target, "drvs": drvs, "drvOutputs": drv_outputs, "paths": outs},
          open(f"golden/{case}.json", "w"), indent=1, sort_keys=True)
PY
  rm "golden/$c.raw"
  echo "$c: $drv"
done
