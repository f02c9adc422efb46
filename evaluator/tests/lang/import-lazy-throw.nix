(import ./data/throws.nix).ok
