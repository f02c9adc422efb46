let f = { __functor = self: a: b: a + b + self.c; c = 100; }; in f 1 2
