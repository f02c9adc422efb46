with { a = 1; }; with { a = 2; }; a
