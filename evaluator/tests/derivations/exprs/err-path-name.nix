builtins.path { path = /tmp; name = "a b"; }
