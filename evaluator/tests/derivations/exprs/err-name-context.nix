let a = derivation { name = "a"; builder = "/bin/sh"; system = "x86_64-linux"; }; in (derivation { name = "x${a}"; builder = "/bin/sh"; system = "x86_64-linux"; }).drvPath
