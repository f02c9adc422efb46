builtins.fromJSON ''{"a": [1, 2.5, "x", null, true, {"b": -3}], "u": "\u00e9"}''
