# Derivation graphs for the build equivalence tests (store/tests/build_golden.rs).
# Builders use only /bin/sh, /bin/bash, /bin/mkdir, /bin/chmod and /bin/ln, which the tests
# bind into the sandbox; outputs are deterministic and do not mention the build directory.
let
  system = "x86_64-linux";
  sh = script: { builder = "/bin/sh"; args = [ "-c" script ]; inherit system; };
  mk = name: script: derivation (sh script // { inherit name; });

  chain = builtins.foldl' (prev: i:
    mk "chain-${toString i}" "echo 'step ${toString i}' ${if prev == null then "" else prev} > $out")
    null [ 1 2 3 4 5 ];

  diamond =
    let
      a = mk "dia-a" "echo a > $out";
      b = mk "dia-b" "echo b ${a} > $out";
      c = mk "dia-c" "echo c ${a} > $out";
    in mk "dia-d" "echo d ${b} ${c} > $out";

  # 50 nodes; node i depends on i-1 and i/2; its output mentions only some inputs, so the
  # references found by scanning are a strict subset of the inputs.
  graph50 =
    let
      node = i:
        let
          deps = (if i > 0 then [ (i - 1) ] else [ ]) ++ (if i > 3 then [ (i / 2) ] else [ ]);
          depDrvs = map (d: nodes.${toString d}) deps;
          mentioned = builtins.filter (d: builtins.bitAnd (i + d) 1 == 1) deps;
        in derivation (sh ''
          echo "node ${toString i} ${toString (map (d: nodes.${toString d}) mentioned)}" > $out
          : ${toString (map (d: builtins.unsafeDiscardStringContext "${d}") depDrvs)}
        '' // {
          name = "g50-${toString i}";
          deps = depDrvs;
        });
      nodes = builtins.listToAttrs (builtins.genList (i: { name = toString i; value = node i; }) 50);
    in mk "g50-top" "echo ${toString (builtins.attrValues nodes)} > $out";

  multi = derivation (sh ''
    echo lib > $lib
    echo "dev needs $lib" > $dev
    echo "out needs $dev" > $out
  '' // { name = "multi"; outputs = [ "out" "dev" "lib" ]; });

  multiUser = mk "multi-user" "echo ${multi.dev} > $out";

  tree = mk "tree" ''
    /bin/mkdir -p $out/bin $out/share/empty $out/lib
    echo '#!/bin/sh' > $out/bin/run
    echo "exec $out/lib/helper" >> $out/bin/run
    /bin/chmod +x $out/bin/run
    printf 'x%.0s' 1 2 3 4 5 6 7 8 9 > $out/lib/helper
    /bin/ln -s ../lib/helper $out/bin/link
    /bin/ln -s $out/lib/helper $out/bin/abslink
    /bin/chmod 0775 $out/lib/helper
  '';

  fodFlat = derivation (sh "printf hello > $out" // {
    name = "fod-flat";
    outputHashMode = "flat";
    outputHashAlgo = "sha256";
    outputHash = "2cf24dba5fb0a30e26e83b2ac5b9e29e1b161e5c1fa7425e73043362938b9824";
  });

  fodRecursive = derivation (sh ''
    /bin/mkdir -p $out/d
    printf one > $out/a
    printf two > $out/d/b
  '' // {
    name = "fod-rec";
    outputHashMode = "recursive";
    outputHash = "sha256-XjuiSI4jrMEP9Ispi00FrUyJrDY+NZxlqearZXBSdgQ=";
  });

  fodUser = mk "fod-user" "echo ${fodFlat} ${fodRecursive} > $out";

  passAsFile = derivation (sh ''
    while IFS= read -r l || [ -n "$l" ]; do echo "line: $l"; done < "$bigPath" > $out
    echo "file: ''${bigPath##*/} big=''${big-unset}" >> $out
  '' // {
    name = "pass-as-file";
    big = "first line\nsecond line ${placeholder "out"}";
    passAsFile = [ "big" ];
  });

  structured = derivation {
    name = "structured";
    inherit system;
    builder = "/bin/bash";
    args = [ "-c" ''
      source "$NIX_ATTRS_SH_FILE"
      echo "''${foo} ''${list[1]} ''${set[k]} ''${flag}" > "''${outputs[out]}"
      while IFS= read -r l || [ -n "$l" ]; do echo "$l"; done < "$NIX_ATTRS_JSON_FILE" >> "''${outputs[out]}"
      echo >> "''${outputs[out]}"
      echo "out=''${out-unset}" >> "''${outputs[out]}"
    '' ];
    __structuredAttrs = true;
    foo = "it's \"quoted\"";
    list = [ 1 "two" 3 ];
    set = { k = "v"; n = null; };
    flag = true;
    nested = { a = [ { b = 1; } ]; };
    dep = chain;
  };

  envDump = derivation (sh ''
    echo "HOME=$HOME NIX_STORE=$NIX_STORE CORES=$NIX_BUILD_CORES LOGFD=$NIX_LOG_FD TERM=$TERM PATH=$PATH" > $out
    echo "out=$out ph=$ph custom=$custom checked=''${NIX_OUTPUT_CHECKED-unset}" >> $out
  '' // {
    name = "env-dump";
    ph = placeholder "out";
    custom = "a b\tc";
  });

  # exportReferencesGraph: the closure of an input in --register-validity form, and (structured)
  # as path-info JSON (narHash, narSize, references, closureSize).
  refsGraph = derivation (sh ''
    while IFS= read -r l || [ -n "$l" ]; do echo "$l"; done < closure > $out
  '' // {
    name = "refs-graph";
    exportReferencesGraph = [ "closure" diamond ];
  });
  refsGraphStructured = derivation {
    name = "refs-graph-structured";
    inherit system;
    builder = "/bin/bash";
    args = [ "-c" ''
      source "$NIX_ATTRS_SH_FILE"
      while IFS= read -r l || [ -n "$l" ]; do echo "$l"; done < "$NIX_ATTRS_JSON_FILE" > "''${outputs[out]}"
    '' ];
    __structuredAttrs = true;
    exportReferencesGraph.closure = [ diamond ];
  };
in {
  inherit refsGraph refsGraphStructured;
  inherit chain diamond graph50 multi multiUser tree fodFlat fodRecursive fodUser passAsFile structured envDump;
}
