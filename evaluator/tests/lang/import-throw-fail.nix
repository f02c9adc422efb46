(import ./data/throws.nix).bad
