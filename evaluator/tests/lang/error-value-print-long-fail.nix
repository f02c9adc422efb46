builtins.length { a = 1; b = "a string"; c = [ 1 2 3 ]; d = { e = null; }; f = x: x; }
