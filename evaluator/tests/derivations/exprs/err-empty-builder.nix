(derivation { name = "a"; builder = ""; system = "x"; }).drvPath
