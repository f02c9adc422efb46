let d = "x"; in ./${d}
