builtins.getContext (derivation { name = "p"; builder = "/bin/sh"; system = "x86_64-linux"; outputs = ["out" "dev"]; }).dev.outPath
