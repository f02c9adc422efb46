let a = 1;
  b = "x
y";
in [ a b ]
