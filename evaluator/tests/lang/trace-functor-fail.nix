let f = { __functor = self: x: x + self.inc; }; in f 1
