(derivation { name = "a"; builder = "/bin/sh"; system = "x86_64-linux"; __structuredAttrs = true; allowedReferences = []; maxSize = 1; }).drvPath
