(a: b: c: a - b - c) 10 3 2
