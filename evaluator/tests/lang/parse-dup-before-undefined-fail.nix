[ undefinedVar { b = 1; b = 2; } ]
