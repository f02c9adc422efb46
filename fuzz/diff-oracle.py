#!/usr/bin/env python3
"""Differential fuzzing against the reference Nix: random well-formed Nix programs are evaluated by
both the oracle (`nix eval --file`) and flaked-eval (bench/lang/runner, `flaked-eval-lang-bench FILE`),
and any difference in exit code, stdout or stderr is reported (and saved as a reproducer).

Usage: fuzz/diff-oracle.py RUNNER [COUNT=200] [SEED=1] [OUTDIR=/tmp/flaked-diff]
The programs are deterministic for a given seed. Reproducers land in OUTDIR/diff-N.nix with the two
outputs beside them; turn the interesting ones into evaluator/tests/lang cases.
"""
import os
import random
import subprocess
import sys

NIX = os.environ.get("NIX", "/work/shared/oracle/nix")

NAMES = ["a", "b", "x", "self"]
ATTRS = ["a", "b", "c", "outPath", "__toString", "type", '"a b"', '${"a"}', "or"]
LEAVES = ["0", "1", "2", "-1", "9223372036854775807", "(-9223372036854775807 - 1)", "1.5", "0.1",
          "1.0e21", "3.0", '""', '"a"', '"x${"y"}"', "''\n  a\n    b\n''", '"\\n\\t\\\\$"', '"é"',
          "null", "true", "false", "[ ]", "{ }", "./p", "(x: x)", "builtins.add", "(builtins.add 1)"]
BUILTINS = [
    ("builtins.length", 1), ("builtins.head", 1), ("builtins.tail", 1), ("builtins.attrNames", 1),
    ("builtins.attrValues", 1), ("toString", 1), ("builtins.toJSON", 1), ("builtins.typeOf", 1),
    ("builtins.seq", 2), ("builtins.deepSeq", 2), ("builtins.tryEval", 1), ("map", 2),
    ("builtins.filter", 2), ("builtins.foldl'", 3), ("builtins.genList", 2), ("builtins.elemAt", 2),
    ("builtins.concatStringsSep", 2), ("builtins.substring", 3), ("builtins.stringLength", 1),
    ("builtins.mapAttrs", 2), ("builtins.removeAttrs", 2), ("builtins.sort", 2), ("builtins.split", 2),
    ("builtins.match", 2), ("builtins.replaceStrings", 3), ('builtins.hashString "sha256"', 1),
    ("builtins.functionArgs", 1), ("builtins.isFunction", 1), ("builtins.compareVersions", 2),
    ("builtins.bitAnd", 2), ("builtins.div", 2), ("builtins.ceil", 1), ("builtins.floor", 1),
    ("builtins.fromJSON", 1), ("builtins.concatLists", 1), ("builtins.elem", 2), ("builtins.any", 2),
    ("builtins.listToAttrs", 1), ("builtins.intersectAttrs", 2), ("builtins.catAttrs", 2),
    ("builtins.groupBy", 2), ("builtins.zipAttrsWith", 2), ("builtins.splitVersion", 1),
    ("builtins.parseDrvName", 1), ("builtins.lessThan", 2), ("builtins.hasAttr", 2), ("builtins.getAttr", 2),
    ("builtins.isAttrs", 1), ("builtins.unsafeDiscardStringContext", 1), ("builtins.baseNameOf", 1),
    ("builtins.dirOf", 1), ("builtins.toXML", 1), ("builtins.throw", 1), ("builtins.trace", 2),
]
BINOPS = ["+", "-", "*", "/", "==", "!=", "<", "<=", ">", ">=", "&&", "||", "->", "++", "//"]


def expr(r, depth):
    if depth > 4 or r.random() < 0.2:
        return r.choice(LEAVES + NAMES[:2])
    d = depth + 1
    k = r.randrange(16)
    if k == 0:
        return "(%s %s %s)" % (expr(r, d), r.choice(BINOPS), expr(r, d))
    if k == 1:
        names = r.sample(NAMES[:3], r.randint(1, 3))
        binds = " ".join("%s = %s;" % (n, expr(r, d)) for n in names)
        return "(let %s in %s)" % (binds, expr(r, d))
    if k == 2:
        seen, binds = set(), []
        for _ in range(r.randint(0, 3)):
            a = r.choice(ATTRS)
            if a in seen:
                continue
            seen.add(a)
            binds.append("%s = %s;" % (a, expr(r, d)))
        return "%s{ %s }" % ("rec " if r.random() < 0.3 else "", " ".join(binds))
    if k == 3:
        return "[ %s ]" % " ".join("(%s)" % expr(r, d) for _ in range(r.randint(0, 4)))
    if k == 4:
        sel = "(%s).%s" % (expr(r, d), r.choice(ATTRS))
        return "(%s or %s)" % (sel, expr(r, d)) if r.random() < 0.5 else sel
    if k == 5:
        head = r.choice(["x: ", "{ a, b ? 1, ... }@x: ", "{ a ? x, x ? 2 }: ", "self: "])
        return "(%s%s)" % (head, expr(r, d))
    if k in (6, 7, 8):
        name, arity = r.choice(BUILTINS)
        return "(%s %s)" % (name, " ".join("(%s)" % expr(r, d) for _ in range(arity)))
    if k == 9:
        return "(%s (%s))" % (expr(r, d), expr(r, d))
    if k == 10:
        return "(if %s then %s else %s)" % (expr(r, d), expr(r, d), expr(r, d))
    if k == 11:
        return "(with %s; %s)" % (expr(r, d), expr(r, d))
    if k == 12:
        return "(assert %s; %s)" % (expr(r, d), expr(r, d))
    if k == 13:
        return '"pre ${%s} post"' % expr(r, d)
    if k == 14:
        return "(%s ? %s)" % (expr(r, d), r.choice(ATTRS))
    return "(%s%s)" % (r.choice(["!", "-"]), expr(r, d))


def run(cmd, cwd):
    try:
        p = subprocess.run(cmd, cwd=cwd, capture_output=True, timeout=30)
        return p.returncode, p.stdout, p.stderr
    except subprocess.TimeoutExpired:
        return "timeout", b"", b""


def main():
    runner = sys.argv[1]
    count = int(sys.argv[2]) if len(sys.argv) > 2 else 200
    seed = int(sys.argv[3]) if len(sys.argv) > 3 else 1
    outdir = sys.argv[4] if len(sys.argv) > 4 else "/tmp/flaked-diff"
    os.makedirs(outdir, exist_ok=True)
    r = random.Random(seed)
    same = diff = 0
    for i in range(count):
        src = expr(r, 0) + "\n"
        path = os.path.join(outdir, "case.nix")
        with open(path, "w") as f:
            f.write(src)
        want = run([NIX, "eval", "--file", "case.nix"], outdir)
        got = run([runner, "case.nix"], outdir)
        # Normalise: the runner prints a trailing newline after the rendered error like nix does.
        if (want[0], want[1], want[2].rstrip()) == (got[0], got[1], got[2].rstrip()):
            same += 1
            continue
        diff += 1
        base = os.path.join(outdir, "diff-%d-%d" % (seed, i))
        with open(base + ".nix", "w") as f:
            f.write(src)
        with open(base + ".txt", "wb") as f:
            for label, res in (("nix", want), ("ours", got)):
                f.write(("== %s exit %s\n" % (label, res[0])).encode())
                f.write(res[1] + b"\n-- stderr\n" + res[2] + b"\n")
        print("DIFF %s: %s" % (base, src.strip()[:160]), flush=True)
    print("%d programs: %d identical, %d different" % (count, same, diff))


if __name__ == "__main__":
    main()
