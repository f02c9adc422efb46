builtins.path { path = /tmp; foo = 1; }
