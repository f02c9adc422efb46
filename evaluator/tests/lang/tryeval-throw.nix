[ (builtins.tryEval (throw "x")) (builtins.tryEval 1) (builtins.tryEval (assert false; 1)) ]
