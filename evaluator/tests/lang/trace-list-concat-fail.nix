[ 1 ] ++ (builtins.map (x: x) 5)
