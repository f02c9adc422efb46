builtins.head [ 1 (throw "no") ]
