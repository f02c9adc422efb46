{ x = derivation { name = "p"; builder = "/bin/sh"; system = "x86_64-linux"; }; y = [ (derivation { name = "q"; builder = "/bin/sh"; system = "x86_64-linux"; outputs = ["out" "dev"]; }).dev ]; }
