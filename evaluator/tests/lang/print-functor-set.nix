{ __functor = self: x: x; y = 1; }
