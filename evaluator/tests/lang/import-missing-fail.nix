import ./data/does-not-exist.nix
