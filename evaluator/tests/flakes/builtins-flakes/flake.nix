{ description = "for getFlake";
  inputs.sub.url = "path:./sub";
  outputs = { self, sub }: { v = sub.v + 1; lib.greet = n: "hello ${n}"; }; }
