import ./sub/leaf.nix
