builtins.genList (i: i * i) 40
