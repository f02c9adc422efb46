import ./data/simple.nix
