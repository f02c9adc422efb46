with builtins; [ (length [ 1 2 3 ]) (head [ 1 2 ]) (tail [ 1 2 3 ]) (elemAt [ 1 2 3 ] 2) (elem 2 [ 1 2 ]) (elem 5 [ 1 ]) ]
