# (b1) build and fold a 100,000-element list: genList, map, filter, foldl', plus a plain-Nix
# recursive fold over indices (no builtin folding).
let
  n = 100000;
  l = builtins.genList (i: i * 2) n;
  sum = builtins.foldl' (acc: x: acc + x) 0 l;
  l2 = map (x: x + 1) l;
  odd = builtins.length (builtins.filter (x: builtins.bitAnd x 1 == 1) l2);
  # Plain-Nix tree fold over index ranges (recursion depth ~log n).
  tree = lo: hi: if hi - lo == 1 then builtins.elemAt l2 lo else tree lo ((lo + hi) / 2) + tree ((lo + hi) / 2) hi;
in
[ sum odd (tree 0 n) ]
