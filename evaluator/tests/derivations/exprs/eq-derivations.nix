let d = derivation { name = "p"; builder = "/bin/sh"; system = "x86_64-linux"; }; in [ (d == d) (d == derivation { name = "p"; builder = "/bin/sh"; system = "x86_64-linux"; }) (d.out == d) ]
