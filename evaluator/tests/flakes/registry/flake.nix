{ inputs.t.url = "flake:target";
  outputs = { self, t, target }: { x = [ t.v target.v ]; }; }
