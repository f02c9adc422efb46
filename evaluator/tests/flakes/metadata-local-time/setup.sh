git init -q -b main . && git add flake.nix && git commit -q -m init
