let
  f = x: g x;
  g = y: h y;
  h = z: z.missing;
in
f { present = 1; }
