#!flaked instantiate
builtins.trace [ (1 + 1) ] (builtins.trace "second" { x = 1; })
