(derivation { name = "a"; builder = "/bin/sh"; system = "x86_64-linux"; outputs = 1; }).drvPath
