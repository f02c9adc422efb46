[ (builtins.pathExists ./data/simple.nix) (builtins.pathExists ./data/nope) (builtins.pathExists ./data) ]
