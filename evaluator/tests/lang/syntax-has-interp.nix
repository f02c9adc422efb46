let k = "a"; in { a = 1; } ? "${k}"
