{ f = x: x; g = { a }: a; h = builtins.map; }
