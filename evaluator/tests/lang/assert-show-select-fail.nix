let s = { a.b = false; }; in assert s.a.b; 1
