{ inputs.a.follows = "b"; inputs.b.follows = "a"; outputs = { self, a, b }: { x = 1; }; }
