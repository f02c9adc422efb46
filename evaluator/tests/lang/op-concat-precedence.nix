[ 1 ] ++ [ 2 ] ++ builtins.map (x: x * 10) [ 3 ]
