{ inputs.b.url = "path:./b"; inputs.c.follows = "b";
  outputs = { self, b, c }: { v = [ b.n c.n ]; }; }
