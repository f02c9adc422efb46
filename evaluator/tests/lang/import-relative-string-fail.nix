import "data/simple.nix"
