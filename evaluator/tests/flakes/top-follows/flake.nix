{ inputs.a.url = "path:./a"; inputs.b.follows = "a";
  outputs = { self, a, b }: { x = [ a.v b.v ]; }; }
