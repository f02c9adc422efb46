(import ./data/simple.nix) == (import ./data/simple.nix)
