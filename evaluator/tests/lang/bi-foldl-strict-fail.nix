builtins.foldl' (a: b: b) 0 [ (throw "forced by foldl'") 1 ]
