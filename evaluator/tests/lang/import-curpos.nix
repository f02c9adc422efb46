import ./data/curpos.nix
