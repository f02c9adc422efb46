let x = x; in 3
