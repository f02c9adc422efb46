let s = { a = 1; b = { c = 2; }; }; in let inherit (s) a; inherit (s.b) c; in a + c
