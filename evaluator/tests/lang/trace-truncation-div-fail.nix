builtins.ceil (builtins.div (x: x) 1)
