#!/usr/bin/env bash
# Regenerates store/tests/flake-golden/* with the reference Nix 2.26
# (/work/shared/oracle/nix, or $NIX_ORACLE). Needs git and python3; the tests that read the
# output need neither the oracle nor python.
#   flakerefs.json        parseFlakeRef + flakeRefToString for every line of flakerefs.txt
#   flakeref-attrs.json   flakeRefToString for every attribute set in flakeref-attrs.txt
#   locks/*.lock          flake.lock files `nix flake lock` wrote for the fixture flakes
#   fetch.json            builtins.fetchTree results (with outPath) for the fixture repo/tree/tarball
# Fixtures come from scripts/flake-fixtures.sh under /tmp/flaked-fixtures.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
ORACLE=${NIX_ORACLE:-/work/shared/oracle/nix}
OUT=$ROOT/store/tests/flake-golden
FX=/tmp/flaked-fixtures
bash "$ROOT/scripts/flake-fixtures.sh" "$FX" >/dev/null
mkdir -p "$OUT/locks"

cd /tmp   # the oracle sees /tmp at the same path
export ORACLE OUT FX
python3 - <<'PY'
import json, os, subprocess, re

oracle = os.environ["ORACLE"]; out = os.environ["OUT"]; fx = os.environ["FX"]

def nix_str(s):
    return '"' + s.replace('\\', '\\\\').replace('"', '\\"').replace('${', '\\${') + '"'

def run(expr, impure=False):
    args = [oracle, "eval", "--json", "--expr", expr] + (["--impure"] if impure else [])
    p = subprocess.run(args, capture_output=True, text=True)
    if p.returncode == 0:
        return {"ok": json.loads(p.stdout)}
    err = p.stderr
    i = err.rfind("error: ")
    msg = err[i + len("error: "):] if i >= 0 else err
    msg = "\n".join(l.strip() for l in msg.strip().splitlines())
    return {"error": msg}

refs = []
for line in open(os.path.join(out, "flakerefs.txt")):
    ref = line.rstrip("\n")
    if not ref:
        continue
    r = run("let r = builtins.parseFlakeRef %s; in { attrs = r; string = builtins.flakeRefToString r; }" % nix_str(ref))
    e = {"ref": ref}
    if "ok" in r:
        e["attrs"] = r["ok"]["attrs"]; e["string"] = r["ok"]["string"]
    else:
        e["error"] = r["error"]
    refs.append(e)
with open(os.path.join(out, "flakerefs.json"), "w") as f:
    json.dump(refs, f, indent=1, sort_keys=True); f.write("\n")

attrs = []
for line in open(os.path.join(out, "flakeref-attrs.txt")):
    a = line.strip()
    if not a:
        continue
    j = run(a)["ok"]
    r = run("builtins.flakeRefToString (%s)" % a)
    e = {"attrs": j}
    if "ok" in r:
        e["string"] = r["ok"]
    else:
        e["error"] = r["error"]
    attrs.append(e)
with open(os.path.join(out, "flakeref-attrs.json"), "w") as f:
    json.dump(attrs, f, indent=1, sort_keys=True); f.write("\n")

for name in ["leaf", "mid", "top", "gitdep", "rel"]:
    d = os.path.join(fx, "flakes", name)
    p = subprocess.run([oracle, "flake", "lock"], cwd=d, capture_output=True, text=True)
    if p.returncode != 0:
        raise SystemExit("nix flake lock failed in %s: %s" % (d, p.stderr))
    lock = os.path.join(d, "flake.lock")
    # Keep mtimes fixed so that flakes locking this one get a reproducible lastModified.
    for q in (lock, d):
        if os.path.exists(q):
            os.utime(q, (1650000000, 1650000000))
    if os.path.exists(lock):
        with open(lock, "rb") as src, open(os.path.join(out, "locks", name + ".lock"), "wb") as dst:
            dst.write(src.read())

# A registry written by `nix registry add`, and resolutions through it (`resolvedUrl` of
# `nix flake metadata --flake-registry`).
reg = os.path.join(fx, "registry.json")
if os.path.exists(reg):
    os.remove(reg)
for frm, to in [("a", "path:%s/flakes/leaf" % fx), ("c", "flake:a"), ("d", "git+file://%s/repo" % fx),
                ("m", "path:%s/flakes/mid" % fx), ("alias/v1", "d/feature")]:
    subprocess.run([oracle, "registry", "add", "--registry", reg, frm, to], check=True, capture_output=True)
with open(reg, "rb") as src, open(os.path.join(out, "registry.json"), "wb") as dst:
    dst.write(src.read())
resolutions = []
for ref in ["a", "c", "d", "m", "d/feature", "d/9c37a80c336b585c95959b8130b96aecfeccd445",
            "d/main/9c37a80c336b585c95959b8130b96aecfeccd445", "a/branch", "unknown", "alias/v1", "alias"]:
    p = subprocess.run([oracle, "flake", "metadata", "--json", "--flake-registry", reg, ref],
                       capture_output=True, text=True)
    e = {"ref": ref}
    if p.returncode == 0:
        e["resolvedUrl"] = json.loads(p.stdout)["resolvedUrl"]
    else:
        i = p.stderr.rfind("error: ")
        e["error"] = "\n".join(l.strip() for l in p.stderr[i + 7:].strip().splitlines())
    resolutions.append(e)
with open(os.path.join(out, "registry-resolve.json"), "w") as f:
    json.dump(resolutions, f, indent=1, sort_keys=True); f.write("\n")

fetches = {}
cases = {
    "repo-workdir": '{ type = "git"; url = "file://%s/repo"; }' % fx,
    "repo-main": '{ type = "git"; url = "file://%s/repo"; ref = "main"; }' % fx,
    "repo-tag": '{ type = "git"; url = "file://%s/repo"; ref = "v1"; }' % fx,
    "repo-feature": '{ type = "git"; url = "file://%s/repo"; ref = "refs/heads/feature"; }' % fx,
    "repo-rev": '{ type = "git"; url = "file://%s/repo"; rev = "9c37a80c336b585c95959b8130b96aecfeccd445"; ref = "main"; }' % fx,
    "dirty": '{ type = "git"; url = "file://%s/dirty"; }' % fx,
    "tree": '{ type = "path"; path = "%s/tree"; }' % fx,
    "tarball": '{ type = "tarball"; url = "file://%s/src.tar.gz"; }' % fx,
}
for k, a in cases.items():
    r = run("let t = builtins.fetchTree (%s); in removeAttrs t [ \"outPath\" ] // { storePath = t.outPath; }" % a, impure=True)
    fetches[k] = r.get("ok", {"error": r.get("error")})
with open(os.path.join(out, "fetch.json"), "w") as f:
    json.dump(fetches, f, indent=1, sort_keys=True); f.write("\n")
PY
echo "goldens written to $OUT"
