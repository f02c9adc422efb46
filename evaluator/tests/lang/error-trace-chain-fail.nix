let a = { b = c; }; c = d.e; d = { }; in a.b
