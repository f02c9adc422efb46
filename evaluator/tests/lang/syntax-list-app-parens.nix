[ (builtins.add 1 2) builtins.add 1 2 ]
