# (c) a deeply lazy fixed point: 10,000 attributes, each defined through `self` in terms of others
# (a chain plus a back-reference), forced from the last one.
let
  n = 10000;
  fix = f: let x = f x; in x;
  name = i: "a${toString i}";
  s = fix (self: builtins.listToAttrs (builtins.genList (i: {
    name = name i;
    value = if i == 0 then 1 else self.${name (i - 1)} + (if i > 1 then builtins.bitAnd self.${name (i / 2)} 7 else 0);
  }) n));
in
s.${name (n - 1)}
