let a = derivation { name = "a"; builder = "/bin/sh"; system = "x86_64-linux"; }; in builtins.toFile "f" "${a}"
