let x = { y = 1; }; in { a = x; b = x; }
