{ __functor = 1; } 2
