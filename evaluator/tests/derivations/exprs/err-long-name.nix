(derivation { name = builtins.concatStringsSep "" (builtins.genList (_: "x") 212); builder = "/bin/sh"; system = "x86_64-linux"; }).drvPath
