let s = { a = 1; }; in "value: ${s.b}"
