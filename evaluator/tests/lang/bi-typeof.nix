map builtins.typeOf [ 1 1.0 "s" ./p null true [ ] { } (x: x) builtins.add (builtins.add 1) ]
