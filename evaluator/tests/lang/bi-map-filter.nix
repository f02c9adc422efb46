with builtins; [ (map (x: x * x) [ 1 2 3 ]) (filter (x: x > 1) [ 1 2 3 ]) (genList (i: i * 2) 5) (concatMap (x: [ x x ]) [ 1 2 ]) ]
