{ inputs.a.url = "path:./a"; inputs.c.url = "path:./c";
  inputs.a.inputs.b.inputs.c.follows = "c";
  outputs = { self, a, c }: { x = a.v; }; }
