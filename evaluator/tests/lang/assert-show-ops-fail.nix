let a = 1; b = 2; in assert !(a + b * 2 - 1 >= 10 || a / b != 0 -> a < b) && [ a ] ++ [ b ] == [ ]; 1
