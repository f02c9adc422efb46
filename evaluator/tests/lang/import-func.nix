import ./data/func.nix { a = 5; }
