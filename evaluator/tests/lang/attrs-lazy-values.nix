let s = { a = throw "boom"; b = 2; }; in s.b
