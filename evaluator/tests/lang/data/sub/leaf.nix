{ leaf = ./.; here = ./leaf.nix; }
