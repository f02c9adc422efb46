let x = "a"; in assert x == "b\n${x}"; 1
