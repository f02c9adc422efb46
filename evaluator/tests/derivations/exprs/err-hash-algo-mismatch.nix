(derivation { name = "a"; builder = "/bin/sh"; system = "x86_64-linux"; outputHashAlgo = "sha1"; outputHash = "sha256-47DEQpj8HBSa+/TImW+5JCeuQeRkm5NMpJWZG3hSuFU="; }).drvPath
