let x = 1; y = 2; in let inherit x y; z = 3; in [ x y z ]
