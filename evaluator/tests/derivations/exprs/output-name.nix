let d = derivation { name = "p"; builder = "/bin/sh"; system = "x86_64-linux"; outputs = ["lib" "out"]; }; in [ d.outputName d.out.outputName (builtins.length d.all) d.type ]
