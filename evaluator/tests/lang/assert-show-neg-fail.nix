let n = 5; in assert -n > 0; 1
