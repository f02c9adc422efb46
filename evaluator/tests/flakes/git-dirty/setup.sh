git init -q -b main . && git add flake.nix a.txt && git commit -q -m init && echo modified > a.txt && echo new > untracked.txt
