builtins.getContext (builtins.toFile "x" "y")
