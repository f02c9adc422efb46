(derivation { name = "a"; builder = "/bin/sh"; system = "x86_64-linux"; outputHashAlgo = "sha256"; outputHash = "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b85z"; }).drvPath
