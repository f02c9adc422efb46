#!/usr/bin/env bash
# Regenerate the golden files of the flaked-store tests (store/tests/golden/) with the
# reference Nix 2.26. Tests only read these files; CI never needs the oracle.
#   usage: scripts/regen-store-goldens.sh
set -euo pipefail

NIX=${NIX:-/work/shared/oracle/nix}
ORACLE_STORE=${ORACLE_STORE:-/opt/nix-oracle}   # physical root of the oracle's /nix/store
REPO=$(cd "$(dirname "$0")/.." && pwd)
G=$REPO/store/tests/golden
WORK=$(mktemp -d /tmp/store-goldens.XXXXXX)
trap 'chmod -R u+w "$WORK" 2>/dev/null; rm -rf "$WORK"' EXIT
cd /tmp   # the oracle runs in a chroot that sees /tmp

rm -rf "$G/nar" "$G/drv" "$G"/*.json "$G"/*.jsonl
mkdir -p "$G/nar" "$G/drv"

############################################################################ hashes
# builtins.hashString in every algorithm, printed in every format by convertHash.
"$NIX" eval --json --expr '
  let
    inputs = [ "" "a" "abc" "hello world\n" "The quick brown fox jumps over the lazy dog" "\u00e9t\u00e9 ${"x"}" ];
    algos = [ "md5" "sha1" "sha256" "sha512" ];
    conv = h: a: f: builtins.convertHash { hash = h; hashAlgo = a; toHashFormat = f; };
  in builtins.concatMap (s: map (a:
    let h = builtins.hashString a s; in {
      input = s; algo = a; base16 = h;
      nix32 = conv h a "nix32"; base64 = conv h a "base64"; sri = conv h a "sri";
    }) algos) inputs' | jq . > "$G/hashes.json"

# `nix hash convert` on valid and invalid inputs: one JSON object per case.
convert_case() { # args: extra arguments to `nix hash convert`
  local out err rc
  set +e
  out=$("$NIX" hash convert "$@" 2>"$WORK/err"); rc=$?
  set -e
  err=$(grep -m1 '^error:' "$WORK/err" | sed 's/^error: //' || true)
  jq -cn --args '{args: $ARGS.positional, rc: $rc, stdout: $out, error: $err}' \
    --argjson rc "$rc" --arg out "$out" --arg err "$err" -- "$@"
}
S256_HEX=$(printf 'abc' | sha256sum | cut -c1-64)
S1_HEX=$(printf 'abc' | sha1sum | cut -c1-40)
MD5_HEX=$(printf 'abc' | md5sum | cut -c1-32)
S512_HEX=$(printf 'abc' | sha512sum | cut -c1-128)
{
  for to in base16 nix32 base32 base64 sri; do
    convert_case --hash-algo sha256 --to "$to" "$S256_HEX"
    convert_case --to "$to" "sha1:$S1_HEX"
    convert_case --to "$to" "md5:$MD5_HEX"
    convert_case --hash-algo sha512 --to "$to" "$S512_HEX"
  done
  S256_NIX32=$("$NIX" hash convert --hash-algo sha256 --to nix32 "$S256_HEX")
  S256_SRI=$("$NIX" hash convert --hash-algo sha256 --to sri "$S256_HEX")
  S256_B64=${S256_SRI#sha256-}
  convert_case --hash-algo sha256 --to base16 "$S256_NIX32"
  convert_case --to base16 "sha256:$S256_NIX32"
  convert_case --to base16 "$S256_SRI"
  convert_case --hash-algo sha256 --to base16 "$S256_B64"
  convert_case --to nix32 "sha256:$S256_B64"
  convert_case --to base16 "$(echo "$S256_HEX" | tr a-f A-F)" --hash-algo sha256
  # errors
  convert_case --hash-algo sha256 --to nix32 abc
  convert_case --to nix32 "foo:$S256_HEX"
  convert_case --to nix32 "$S256_HEX"
  convert_case --hash-algo sha1 --to nix32 "sha256:$S256_HEX"
  convert_case --hash-algo sha256 --to nix32 "${S256_HEX:0:63}g"
  convert_case --hash-algo sha256 --to base16 "${S256_NIX32:0:51}e"
  convert_case --hash-algo sha256 --to base16 "z${S256_NIX32:1}"
  convert_case --to base16 "sha256-AAAA"
  convert_case --to base16 "sha256-!!!!${S256_B64:4}"
  convert_case --hash-algo sha256 --to base16 "!${S256_B64:1}"
  convert_case --hash-algo sha256 --to hex "$S256_HEX"
} > "$G/convert.jsonl"

############################################################################ NAR
# The fixture tree; store/tests/golden_nar.rs rebuilds the same tree from the same recipe.
T=$WORK/tree
mkdir -p "$T/dir/sub/deeper" "$T/empty-dir"
printf 'hello\n' > "$T/hello.txt"
: > "$T/empty"
printf '#!/bin/sh\necho hi\n' > "$T/script.sh"; chmod 755 "$T/script.sh"
ln -s hello.txt "$T/link"
ln -s /nonexistent/target "$T/dangling"
head -c 1000 /dev/zero | tr '\0' 'x' > "$T/dir/sub/deeper/thousand"
printf '1234567' > "$T/dir/seven"
printf '12345678' > "$T/dir/eight"
printf 'B' > "$T/B"; printf 'a' > "$T/a"; printf 'Z' > "$T/Z_upper"
printf 'dot' > "$T/dir.ext"; printf 'dash' > "$T/dir-x"
ln -s ../../hello.txt "$T/dir/sub/up"
chmod 755 "$T/dir/sub/deeper/thousand"
chmod 644 "$T/hello.txt" "$T/empty" "$T/dir/seven" "$T/dir/eight" "$T/B" "$T/a" "$T/Z_upper" "$T/dir.ext" "$T/dir-x"

"$NIX" --cmd nix-store --dump "$T" > "$G/nar/tree.nar"
"$NIX" --cmd nix-store --dump "$T/hello.txt" > "$G/nar/hello.nar"
"$NIX" --cmd nix-store --dump "$T/script.sh" > "$G/nar/script.nar"
"$NIX" --cmd nix-store --dump "$T/link" > "$G/nar/link.nar"
"$NIX" --cmd nix-store --dump "$T/empty" > "$G/nar/empty.nar"
"$NIX" --cmd nix-store --dump "$T/empty-dir" > "$G/nar/empty-dir.nar"
{
  for obj in . hello.txt script.sh link empty empty-dir dir; do
    for algo in md5 sha1 sha256 sha512; do
      printf '%s\trecursive\t%s\tbase16\t%s\n' "$obj" "$algo" "$("$NIX" --cmd nix-hash --type "$algo" "$T/$obj")"
      printf '%s\trecursive\t%s\tnix32\t%s\n' "$obj" "$algo" "$("$NIX" --cmd nix-hash --type "$algo" --base32 "$T/$obj")"
    done
    printf '%s\tnarsize\t-\t-\t%s\n' "$obj" "$("$NIX" --cmd nix-store --dump "$T/$obj" | wc -c)"
  done
  for obj in hello.txt script.sh empty dir/sub/deeper/thousand; do
    for algo in md5 sha1 sha256 sha512; do
      printf '%s\tflat\t%s\tbase16\t%s\n' "$obj" "$algo" "$("$NIX" --cmd nix-hash --flat --type "$algo" "$T/$obj")"
      printf '%s\tflat\t%s\tsri\t%s\n' "$obj" "$algo" "$("$NIX" --cmd nix-hash --flat --sri --type "$algo" "$T/$obj")"
    done
  done
} > "$G/nar/hashes.tsv"

############################################################################ store paths
# Content-addressed paths computed by the reference from the fixture tree and strings, in
# the default store dir and in /foo/store. `builtins.path` etc. do the hashing.
cp -a "$T" "$WORK/fixture"
paths_for_store() { # $1 = --store argument or empty, $2 = label
  local store_args=()
  [ -n "$1" ] && store_args=(--store "$1")
  "$NIX" eval --impure "${store_args[@]}" --json --expr '
    let
      t = /. + "'"$WORK"'/fixture";
      a = builtins.toFile "a.txt" "hello";
      b = builtins.toFile "b.txt" "refers to ${a}";
      fo = args: (derivation ({ name = "fo"; system = "x86_64-linux"; builder = "/bin/sh"; } // args)).outPath;
    in {
      storeDir = builtins.storeDir;
      text = [
        { name = "a.txt"; contents = "hello"; refs = []; path = a; }
        { name = "b.txt"; contents = "refers to ${builtins.unsafeDiscardStringContext a}"; refs = [ a ]; path = b; }
        { name = "c.txt"; contents = "two ${builtins.unsafeDiscardStringContext b} ${builtins.unsafeDiscardStringContext a}"; refs = [ a b ]; path = builtins.toFile "c.txt" "two ${b} ${a}"; }
        { name = "empty"; contents = ""; refs = []; path = builtins.toFile "empty" ""; }
      ];
      source = [
        { src = "."; name = "fixture"; recursive = true; path = builtins.path { path = t; name = "fixture"; }; }
        { src = "dir"; name = "dir"; recursive = true; path = builtins.path { path = t + "/dir"; name = "dir"; }; }
        { src = "hello.txt"; name = "hello.txt"; recursive = true; path = builtins.path { path = t + "/hello.txt"; name = "hello.txt"; }; }
        { src = "hello.txt"; name = "hello-flat"; recursive = false; path = builtins.path { path = t + "/hello.txt"; name = "hello-flat"; recursive = false; }; }
        { src = "script.sh"; name = "script-flat"; recursive = false; path = builtins.path { path = t + "/script.sh"; name = "script-flat"; recursive = false; }; }
        { src = "link"; name = "link"; recursive = true; path = builtins.path { path = t + "/link"; name = "link"; }; }
      ];
      fixed = [
        { mode = "flat"; algo = "sha256"; hash = "'"$S256_HEX"'"; name = "fo"; path = fo { outputHash = "'"$S256_HEX"'"; outputHashAlgo = "sha256"; }; }
        { mode = "recursive"; algo = "sha256"; hash = "'"$S256_HEX"'"; name = "fo"; path = fo { outputHash = "'"$S256_HEX"'"; outputHashAlgo = "sha256"; outputHashMode = "recursive"; }; }
        { mode = "recursive"; algo = "sha1"; hash = "'"$S1_HEX"'"; name = "fo"; path = fo { outputHash = "'"$S1_HEX"'"; outputHashAlgo = "sha1"; outputHashMode = "recursive"; }; }
        { mode = "flat"; algo = "sha1"; hash = "'"$S1_HEX"'"; name = "fo"; path = fo { outputHash = "'"$S1_HEX"'"; outputHashAlgo = "sha1"; }; }
        { mode = "flat"; algo = "md5"; hash = "'"$MD5_HEX"'"; name = "fo"; path = fo { outputHash = "'"$MD5_HEX"'"; outputHashAlgo = "md5"; }; }
        { mode = "flat"; algo = "sha512"; hash = "'"$S512_HEX"'"; name = "fo"; path = fo { outputHash = "'"$S512_HEX"'"; outputHashAlgo = "sha512"; }; }
        { mode = "recursive"; algo = "sha512"; hash = "'"$S512_HEX"'"; name = "fo"; path = fo { outputHash = "'"$S512_HEX"'"; outputHashAlgo = "sha512"; outputHashMode = "recursive"; }; }
      ];
    }' | jq . > "$G/paths-$2.json"
}
paths_for_store "" default
mkdir -p "$WORK/altroot"
paths_for_store "local?root=$WORK/altroot&store=/foo/store" foo-store

############################################################################ derivations
# Every top-level expression is instantiated; the .drv files of its whole closure are copied
# verbatim and `nix derivation show -r` gives the fields tests rebuild the derivation from.
cat > "$WORK/builder.sh" <<'SH'
echo building > $out
SH
cat > "$WORK/drvs.nix" <<NIX
let
  sys = "x86_64-linux";
  mk = args: derivation ({ system = sys; builder = "/bin/sh"; } // args);
  simple = mk { name = "simple"; args = [ "-c" "echo hi > \$out" ]; };
  multi = mk { name = "multi"; outputs = [ "out" "dev" "lib" ]; args = [ "-c" "true" ]; };
  escapes = mk {
    name = "escapes";
    args = [ "-c" "printf '%s\\\\n' \"\\\$1\"" "quote\"back\\\\slash" "nl\nline" "tab\tx" "cr\rx" "dollar\\\${x}" "unicode é ✓" "" ];
    weird = "a\"b\\\\c\nd\te\rf";
    empty = "";
  };
  dep = mk { name = "dep"; args = [ "-c" "cat \${simple} \${multi.dev} > \$out" ]; inherit simple; mdev = multi.dev; mlib = multi.lib; };
  foFlat = mk { name = "fo-flat"; outputHash = "$S256_HEX"; outputHashAlgo = "sha256"; };
  foRec = mk { name = "fo-rec"; outputHash = "$S256_SRI"; outputHashMode = "recursive"; };
  foSha1 = mk { name = "fo-sha1"; outputHash = "$S1_HEX"; outputHashAlgo = "sha1"; outputHashMode = "recursive"; };
  foSha512 = mk { name = "fo-sha512"; outputHash = "$S512_HEX"; outputHashAlgo = "sha512"; };
  foMd5 = mk { name = "fo-md5"; outputHash = "$MD5_HEX"; outputHashAlgo = "md5"; };
  useFo = mk { name = "use-fo"; srcs = [ foFlat foRec ]; a = foSha1; b = foSha512; c = foMd5; };
  withSrc = derivation { name = "with-src"; system = sys; builder = ./builder.sh; conf = builtins.toFile "conf" "key=value\n"; dir = builtins.path { path = ./builder.sh; name = "b"; }; };
  structured = mk { name = "structured"; __structuredAttrs = true; list = [ 1 2 "three" ]; attrs = { x = true; y = null; }; outputs = [ "out" "bin" ]; dep = simple; };
  chain = n: if n == 0 then simple else mk { name = "chain-\${toString n}"; prev = chain (n - 1); fo = if n == 5 then foRec else null; };
  diamondA = mk { name = "dia-a"; s = simple; };
  diamondB = mk { name = "dia-b"; s = simple; m = multi; };
  diamond = mk { name = "diamond"; a = diamondA; b = diamondB; bdev = multi.dev; };
  otherSys = derivation { name = "other-sys"; system = "aarch64-darwin"; builder = "/bin/bash"; args = []; passAsFile = [ "big" ]; big = "data"; allowSubstitutes = false; preferLocalBuild = true; };
in {
  inherit simple multi escapes dep foFlat foRec foSha1 foSha512 foMd5 useFo withSrc structured diamond otherSys;
  chain30 = chain 30;
}
NIX
cd "$WORK"
"$NIX" eval --impure --json --file "$WORK/drvs.nix" --apply 'builtins.mapAttrs (n: d: { drvPath = d.drvPath; outputs = builtins.listToAttrs (map (o: { name = o; value = d.${o}.outPath; }) (d.outputs or [ "out" ])); })' \
  | jq -S . > "$G/drv/cases.json"
for drv in $(jq -r '.[].drvPath' "$G/drv/cases.json"); do
  "$NIX" --cmd nix-store -qR "$drv" 2>/dev/null
done | sort -u > "$WORK/closure"
"$NIX" derivation show -r $(jq -r '.[].drvPath' "$G/drv/cases.json") | jq -S . > "$G/drv/show.json"
while read -r p; do
  case "$p" in
    *.drv) cp "$ORACLE_STORE$p" "$G/drv/$(basename "$p")"; chmod 644 "$G/drv/$(basename "$p")" ;;
  esac
done < "$WORK/closure"
cd /tmp

############################################################################ interchange
# The reference reads and verifies a store written by flaked-store (needs cargo).
"$REPO/scripts/store-interchange.sh" > "$G/interchange.out"

echo "golden files written to $G:"
find "$G" -type f | sed "s|$REPO/||" | sort | head -100
