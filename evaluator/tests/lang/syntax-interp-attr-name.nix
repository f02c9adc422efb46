let k = "b"; in { a.${k}.c = 1; }
