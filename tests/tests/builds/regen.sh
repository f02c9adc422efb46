#!/usr/bin/env bash
# Regenerates the goldens of tests/tests/builds.rs with the reference Nix (sandbox off, cores 1).
# The outputs of graph.nix are deleted from the reference's store before each command, so that
# nothing of it is valid yet (they are no GC roots).
set -euo pipefail
cd "$(dirname "$0")"
ORACLE=${ORACLE:-/work/shared/oracle/nix}
o=(--option sandbox false --option cores 1)
outs=()
for a in a b c ok; do outs+=("$("$ORACLE" eval --raw -f graph.nix "$a.outPath")"); done
outs+=("$("$ORACLE" eval --raw -f graph.nix multi.out.outPath)" "$("$ORACLE" eval --raw -f graph.nix multi.dev.outPath)")
fresh() { "$ORACLE" --cmd nix-store --delete "${outs[@]}" >/dev/null 2>&1 || true; }
fresh; "$ORACLE" build -f graph.nix c --dry-run 2> dry-run-c.stderr
fresh; "$ORACLE" build -f graph.nix pair nested multi --dry-run 2> dry-run-many.stderr
fresh; "$ORACLE" build -f graph.nix c -L --no-link -j1 "${o[@]}" 2> build-c.stderr
# Only the lines after the builds (the order of the builds themselves may differ).
fresh; { "$ORACLE" build -f graph.nix bad1 bad2 dep ok -L --no-link --keep-going -j1 "${o[@]}" 2>&1 >/dev/null || true; } \
  | tail -n 4 > keep-going.stderr
fresh
# An evaluation error in a `--expr` installable: its position is the user's text's own.
{ "$ORACLE" build --expr "$(printf '{ a = 1;\n  b = let x = 1; in x.y; }')" b --no-link 2> expr-error.stderr || true; }
# `--json`: what would be built (no times: nothing is built by a dry run).
fresh; "$ORACLE" build -f graph.nix multi a --dry-run --json > dry-run.json 2>/dev/null
# Installable selection: every case of selection-cases.txt, rc, stdout and stderr in one file.
selection() { # CMD… : runs each case with `CMD --expr EXPR ATTR… --dry-run --json`
  local e attrs
  grep -v '^#' selection-cases.txt | while IFS=$'\t' read -r e attrs; do
    # shellcheck disable=SC2086
    "$@" --expr "$e" $attrs --dry-run --json >"$tmp/out" 2>"$tmp/err" && rc=0 || rc=$?
    printf '## %s\n# %s\nrc=%s\n' "$e" "$attrs" "$rc"; cat "$tmp/out" "$tmp/err"
  done
}
tmp=$(mktemp -d); trap 'rm -rf "$tmp"' EXIT
selection "$ORACLE" build > selection.golden
