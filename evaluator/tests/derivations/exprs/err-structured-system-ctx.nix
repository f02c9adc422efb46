let a = derivation { name = "a"; builder = "/bin/sh"; system = "x86_64-linux"; }; in (derivation { name = "b"; builder = "/bin/sh"; system = "${a}"; __structuredAttrs = true; }).drvPath
