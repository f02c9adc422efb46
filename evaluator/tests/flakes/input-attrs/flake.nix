{ inputs.sub = { type = "path"; path = "./sub"; };
  outputs = { self, sub }: { x = sub.v; }; }
