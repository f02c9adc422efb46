assert (x: x) 1 == 2 && ({ a, b ? 1, ... }@args: a) { a = false; }; 1
