#!/usr/bin/env bash
# Writes DIR/graph.nix, the build benchmarks' graph: 200 trivial derivations in 10 layers of
# width 20, each depending on two of the layer before, with NONCE (default: the time and a random
# number) in every derivation so that each written graph is new to both stores.
#   usage: bench/lib/gen-graph.sh DIR [NONCE]
set -euo pipefail
dir=${1:?usage: gen-graph.sh DIR [NONCE]}
nonce=${2:-"$(date +%s%N)-$RANDOM"}
cat > "$dir/graph.nix" <<NIX
let
  layer = l: builtins.genList (i: derivation {
    name = "bg-\${toString l}-\${toString i}"; system = "x86_64-linux"; builder = "/bin/sh";
    args = [ "-c" "echo \${toString l} \${toString i} > \$out" ];
    nonce = "$nonce";
    deps = if l == 0 then [ ] else let p = layers.\${toString (l - 1)}; in
      [ (builtins.elemAt p i) (builtins.elemAt p (if i == 19 then 0 else i + 1)) ];
  }) 20;
  layers = builtins.listToAttrs (builtins.genList (l: { name = toString l; value = layer l; }) 10);
in layers."9"
NIX
