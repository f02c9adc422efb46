git init -q -b main . && git add flake.nix sub/flake.nix && git commit -q -m init
