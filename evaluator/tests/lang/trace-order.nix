[ (builtins.trace "first" 1) (builtins.trace "second" 2) ]
