(x: 1) (throw "not evaluated")
