"abc" 1
