(derivation { name = "a"; builder = "/bin/sh"; }).outPath
