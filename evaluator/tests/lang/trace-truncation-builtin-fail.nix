builtins.floor (builtins.isAttrs (if [ ] then "" else 0))
