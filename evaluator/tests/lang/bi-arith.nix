with builtins; [ (add 1 2) (sub 5 3) (mul 4 5) (div 7 2) (bitAnd 12 10) (bitOr 12 10) (bitXor 12 10) (lessThan 1 2) ]
