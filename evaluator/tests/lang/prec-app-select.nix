let f = x: { a = x; }; in (f 3).a + builtins.length [ 1 2 ]
