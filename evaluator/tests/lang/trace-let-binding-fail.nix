let
  a = b + 1;
  b = c * 2;
  c = "three";
in
a
