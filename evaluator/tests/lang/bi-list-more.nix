with builtins; [ (concatLists [ [ 1 ] [ ] [ 2 3 ] ]) (any (x: x > 2) [ 1 3 ]) (all (x: x > 2) [ 1 3 ]) (partition (x: x > 1) [ 1 2 3 ]) (groupBy (x: if x > 1 then "big" else "small") [ 1 2 3 ]) ]
