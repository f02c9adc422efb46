let f = import ./data/func.nix; in f { a = "x"; }
