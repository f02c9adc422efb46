{ a = { b = { c = { d = 1 + null; }; }; }; }.a.b.c.d
