(derivation { name = "a"; builder = "/bin/sh"; system = "x86_64-linux"; outputHash = "sha999:abc"; }).drvPath
