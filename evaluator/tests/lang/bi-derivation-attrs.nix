let d = derivation { name = "x"; builder = "/bin/sh"; system = "x86_64-linux"; }; in [ d.name d.type d.outputName d.drvPath d.outPath ]
