#!flaked instantiate
let l1 = [ 1 ]; l3 = [ 1 2 3 ]; e = [ ]; s = { }; str = "s"; a = { x = 1; }; in [ l1 l1 l3 l3 e e s s str str a a ]
