{ inputs.a.url = "path:./a"; inputs.a.inputs.b.follows = "";
  outputs = { self, a }: { x = a.v; }; }
