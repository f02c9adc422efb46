let l = [ 1 2 3 ]; in builtins.elemAt l (builtins.length l)
