let k = "x"; in { x = 5; }.${k}
