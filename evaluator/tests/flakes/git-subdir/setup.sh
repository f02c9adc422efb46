git init -q -b main . && git add sub/flake.nix sibling/flake.nix && git commit -q -m init
