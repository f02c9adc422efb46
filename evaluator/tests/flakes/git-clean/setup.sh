git init -q -b main . && git add flake.nix hello.txt && git commit -q -m init
