builtins.scopedImport { x = 41; } ./data/uses-var.nix 0
