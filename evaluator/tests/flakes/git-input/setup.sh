sed "s#@PWD@#$PWD#g" flake.nix.in > flake.nix && rm flake.nix.in
mkdir dep && cd dep && git init -q -b main . && echo 1 > v.txt && echo '{ outputs = { self }: { v = builtins.readFile ./v.txt; }; }' > flake.nix && git add . && git commit -q -m one && git tag v1 && echo 2 > v.txt && GIT_COMMITTER_DATE='1500000100 +0000' git commit -q -a -m two
