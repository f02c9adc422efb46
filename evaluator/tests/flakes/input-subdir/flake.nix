{ inputs.s.url = "path:./tree?dir=inner"; outputs = { self, s }: { x = s.v; }; }
