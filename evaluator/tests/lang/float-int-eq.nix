[ (2 == 2.0) (builtins.typeOf (2 + 0.0)) (builtins.typeOf (4 / 2)) (builtins.typeOf (4.0 / 2)) ]
