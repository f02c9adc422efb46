#!flaked instantiate
{ f = x: x; p = builtins.add; q = builtins.add 1; m = builtins.map (x: x); g = { a }: a; }
