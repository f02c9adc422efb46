#!flaked instantiate
let x = [ x ]; in x
