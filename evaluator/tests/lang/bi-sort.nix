with builtins; [ (sort lessThan [ 3 1 2 ]) (sort (a: b: a > b) [ 1 3 2 ]) (sort (a: b: a.k < b.k) [ { k = 2; v = "a"; } { k = 1; v = "b"; } { k = 2; v = "c"; } ]) ]
