{ inputs.a.url = "path:./a"; inputs.c.url = "path:./c";
  inputs.a.inputs.b.follows = "c";
  outputs = { self, a, c }: { x = a.v; }; }
