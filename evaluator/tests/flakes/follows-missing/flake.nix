{ inputs.a.follows = "nope"; outputs = { self, a }: { x = 1; }; }
