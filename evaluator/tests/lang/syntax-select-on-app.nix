(builtins.listToAttrs [ { name = "x"; value = 1; } ]).x
