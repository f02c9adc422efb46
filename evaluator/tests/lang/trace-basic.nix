builtins.trace "hello trace" 42
