#!flaked instantiate
let x = [ x 1 2 ]; in x
