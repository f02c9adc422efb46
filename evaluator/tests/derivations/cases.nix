# Golden derivation corpus: every attribute is a case; each value is a derivation (or the
# result of derivationStrict). `fixtures` is a directory created by the test and by
# scripts/regen-drv-goldens.sh with the same tree (see fixtures.sh).
{ fixtures }:
let
  sys = "x86_64-linux";
  mk = name: attrs: derivation ({ inherit name; builder = "/bin/sh"; system = sys; } // attrs);
  a = mk "a" { };
  multi = mk "multi" { outputs = [ "out" "dev" "lib" ]; };
  b = mk "b" { dep = a; };
  c = mk "c" { dep = "${a}/bin"; };
  d = mk "d" { deps = [ b c ]; };
  fod = mk "fod" {
    outputHash = "sha256-47DEQpj8HBSa+/TImW+5JCeuQeRkm5NMpJWZG3hSuFU=";
    outputHashMode = "recursive";
  };
  fod2 = mk "fod" {
    outputHash = "sha256-47DEQpj8HBSa+/TImW+5JCeuQeRkm5NMpJWZG3hSuFU=";
    outputHashMode = "recursive";
    different = "builder input";
  };
  text = builtins.toFile "text.txt" "hello\n";
  text2 = builtins.toFile "refers.txt" "see ${text}\n";
  tree = fixtures + "/tree";
  hex256 = "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";
  nix256 = "0mdqa9w1p6cmli6976v4wi0sw9r4p5prkj7lzfd1877wk11c9c73";
  b64256 = "47DEQpj8HBSa+/TImW+5JCeuQeRkm5NMpJWZG3hSuFU=";
in
{
  basic = a;
  strict = builtins.derivationStrict { name = "strict"; builder = "/bin/sh"; system = sys; };
  strict-multi = builtins.derivationStrict { name = "sm"; builder = "/bin/sh"; system = sys; outputs = [ "z" "a" ]; };
  args = mk "args" { args = [ "-c" "echo hi" 1 true false null 2.5 [ "x" "y" [ ] "z" ] ]; };
  env-kinds = mk "env-kinds" {
    int = 42; neg = -7; float = 1.5; small = 0.000001; t = true; f = false; n = null;
    list = [ "a" 1 [ "b" true ] null ]; empty = ""; emptylist = [ ];
  };
  escapes = mk "escapes" { s = "quote\" backslash\\ newline\n tab\t cr\r dollar$ unicode é ✓"; };
  long-env = mk "long-env" { big = builtins.concatStringsSep "," (builtins.genList toString 500); };
  outputs-3 = multi;
  outputs-dev-first = mk "devfirst" { outputs = [ "dev" "out" ]; };
  outputs-unsorted = mk "unsorted" { outputs = [ "z" "b" "a" "out" ]; };
  dev-of-multi = mk "uses-dev" { inc = "${multi.dev}/include"; lib = multi.lib; };
  all-of-multi = mk "uses-all" { all = multi.all; };
  chain = b;
  chain-str = c;
  diamond = d;
  chain-deep = let l1 = mk "l1" { x = a; }; l2 = mk "l2" { x = l1; }; l3 = mk "l3" { x = l2; }; in mk "l4" { x = l3; y = a; };
  drvpath-ref = mk "drvref" { p = a.drvPath; };
  drvpath-ref-deep = mk "drvref2" { p = d.drvPath; };
  drvpath-ref-multi = mk "drvref3" { p = multi.drvPath; };
  out-and-drv = mk "both" { p = a.drvPath; q = a; };
  builder-dep = derivation { name = "bdep"; system = sys; builder = "${a}/bin/sh"; };
  builder-file = derivation { name = "bfile"; system = sys; builder = text; args = [ text2 ]; };
  name-chars = mk "a-b_c.d+e?=x" { };
  name-digits = mk "123" { };
  system-other = derivation { name = "other"; builder = "/bin/sh"; system = "aarch64-darwin"; };
  many-attrs = mk "many" (builtins.listToAttrs (builtins.genList (i: { name = "v${toString i}"; value = i; }) 60));
  fod-flat-hex = mk "fod-flat-hex" { outputHashAlgo = "sha256"; outputHash = hex256; };
  fod-flat-nix32 = mk "fod-flat-nix32" { outputHashAlgo = "sha256"; outputHash = nix256; };
  fod-flat-b64 = mk "fod-flat-b64" { outputHashAlgo = "sha256"; outputHash = b64256; };
  fod-flat-sri = mk "fod-flat-sri" { outputHash = "sha256-${b64256}"; };
  fod-flat-prefixed = mk "fod-flat-prefixed" { outputHash = "sha256:${nix256}"; };
  fod-flat-prefixed-hex = mk "fod-flat-prefixed-hex" { outputHash = "sha256:${hex256}"; };
  fod-empty-algo = mk "fod-empty-algo" { outputHashAlgo = ""; outputHash = "sha256-${b64256}"; };
  fod-sri-with-algo = mk "fod-sri-algo" { outputHashAlgo = "sha256"; outputHash = "sha256-${b64256}"; };
  fod-sha1 = mk "fod-sha1" { outputHashAlgo = "sha1"; outputHash = "da39a3ee5e6b4b0d3255bfef95601890afd80709"; };
  fod-sha1-nix32 = mk "fod-sha1-n" { outputHashAlgo = "sha1"; outputHash = "3jgzhjhz9a3bi6ni4ljba6q6n1dbxy7y"; };
  fod-md5 = mk "fod-md5" { outputHashAlgo = "md5"; outputHash = "d41d8cd98f00b204e9800998ecf8427e"; };
  fod-sha512 = mk "fod-sha512" { outputHash = builtins.convertHash { hash = builtins.hashString "sha512" ""; hashAlgo = "sha512"; toHashFormat = "sri"; }; };
  fod-sha512-hex = mk "fod-sha512-hex" { outputHashAlgo = "sha512"; outputHash = builtins.hashString "sha512" "x"; };
  fod-recursive = fod;
  fod-recursive-sha1 = mk "fod-rec-sha1" { outputHashMode = "recursive"; outputHashAlgo = "sha1"; outputHash = "da39a3ee5e6b4b0d3255bfef95601890afd80709"; };
  fod-nar = mk "fod-nar" { outputHashMode = "nar"; outputHash = "sha256-${b64256}"; };
  fod-flat-explicit = mk "fod-flat-explicit" { outputHashMode = "flat"; outputHash = "sha256-${b64256}"; };
  fod-empty-hash = mk "fod-empty" { outputHashAlgo = "sha256"; outputHash = ""; };
  fod-with-input = mk "fod-input" { src = a; outputHash = "sha256-${b64256}"; };
  fod-outputs-list = mk "fod-outlist" { outputs = [ "out" ]; outputHash = "sha256-${b64256}"; };
  dep-on-fod = mk "dep-on-fod" { src = fod; };
  dep-on-fod2 = mk "dep-on-fod" { src = fod2; };
  structured = mk "structured" {
    __structuredAttrs = true;
    int = 1; float = 2.5; str = "s\"q\n"; list = [ 1 "two" null true ]; set = { z = 1; a = { b = [ ]; }; };
    n = null; dep = a; deps = [ b c ];
  };
  structured-outputs = mk "structured-outs" { __structuredAttrs = true; outputs = [ "out" "bin" ]; };
  structured-fod = mk "structured-fod" { __structuredAttrs = true; outputHash = "sha256-${b64256}"; outputHashMode = "recursive"; };
  structured-args = mk "structured-args" { __structuredAttrs = true; args = [ "-e" a ]; };
  structured-false = mk "structured-false" { __structuredAttrs = false; x = 1; };
  structured-checks = mk "structured-checks" { __structuredAttrs = true; allowedReferences = [ ]; };
  pass-as-file = mk "paf" { passAsFile = [ "big" ]; big = "lots of text"; };
  ignore-nulls = mk "ignore-nulls" { __ignoreNulls = true; n = null; kept = "yes"; alsoNull = null; };
  ignore-nulls-false = mk "ignore-nulls-false" { __ignoreNulls = false; n = null; };
  ca-false = mk "ca-false" { __contentAddressed = false; };
  placeholder-env = mk "placeholder" { outputs = [ "out" "bin" ]; p = placeholder "out"; q = "${placeholder "bin"}/x"; };
  path-tree = mk "path-tree" { src = tree; };
  path-tree-str = mk "path-tree-str" { src = "${tree}"; };
  path-file = mk "path-file" { src = fixtures + "/single.txt"; };
  path-exec = mk "path-exec" { src = fixtures + "/exec.sh"; };
  path-sub = mk "path-sub" { src = tree + "/sub"; };
  path-builtin = mk "path-builtin" { src = builtins.path { path = tree; name = "renamed"; }; };
  path-builtin-filter = mk "path-filter" { src = builtins.path { path = tree; filter = p: t: t != "symlink" && baseNameOf p != "bin"; }; };
  path-builtin-flat = mk "path-flat" { src = builtins.path { path = fixtures + "/single.txt"; recursive = false; }; };
  path-builtin-flat-exec = mk "path-flat-exec" { src = builtins.path { path = fixtures + "/exec.sh"; recursive = false; name = "exec"; }; };
  filter-source = mk "filter-source" { src = builtins.filterSource (p: t: t == "directory" || baseNameOf p == "a") tree; };
  filter-source-none = mk "filter-none" { src = builtins.filterSource (p: t: false) tree; };
  to-file = mk "to-file" { f = text; };
  to-file-refs = mk "to-file-refs" { f = text2; };
  to-file-with-path = mk "to-file-path" { f = builtins.toFile "with-path" "src is ${tree}"; };
  mixed-inputs = mk "mixed" { a = a; f = text; s = tree; d = multi.dev; p = b.drvPath; };
  interp-name = mk "interp-${a.name}" { };
  out-path-only = mk "outpath" { x = a.outPath; y = multi.out.outPath; };
  discard-context = mk "discard" { x = builtins.unsafeDiscardStringContext "${a}"; };
  discard-output-dep = mk "discard-odep" { x = builtins.unsafeDiscardOutputDependency a.drvPath; };
  append-context = mk "append" { x = builtins.appendContext "" { ${builtins.unsafeDiscardStringContext a.drvPath} = { outputs = [ "out" ]; }; }; };
}
