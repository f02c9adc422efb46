let s = { }; in s.a or s.b or 3
