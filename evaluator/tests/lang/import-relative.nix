import ./data/relative.nix
