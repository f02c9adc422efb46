builtins.length { a = [ ]; b = [ 1 ]; c = { }; d = "s"; e = 1; f = 1.5; g = ./p; h = null; i = true; j = x: x; k = "${"i"}"; l = builtins.add; m = -1; }
