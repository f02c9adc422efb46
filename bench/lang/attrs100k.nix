# (b2) a 100,000-attribute set built with `//` (divide and conquer, so the merge work is n log n),
# then a mapAttrs written in plain Nix (attrNames + map + listToAttrs) and a fold over it.
let
  n = 100000;
  build = lo: hi:
    if hi - lo == 1 then { "k${toString lo}" = lo; }
    else let mid = (lo + hi) / 2; in build lo mid // build mid hi;
  s = build 0 n;
  mapAttrs' = f: s: builtins.listToAttrs (map (name: { inherit name; value = f name s.${name}; }) (builtins.attrNames s));
  m = mapAttrs' (name: v: v * 2) s;
  sum = builtins.foldl' (acc: name: acc + m.${name}) 0 (builtins.attrNames m);
in
[ (builtins.length (builtins.attrNames m)) sum m.k99999 ]
