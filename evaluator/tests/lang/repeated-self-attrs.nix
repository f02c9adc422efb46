#!flaked instantiate
let x = { a = x; }; in x
