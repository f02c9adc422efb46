let a = 5; b = 2; a-b = 100; in [ (a-b) (a - b) ]
