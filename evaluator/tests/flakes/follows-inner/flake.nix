{ inputs.a.url = "path:./a"; outputs = { self, a }: { x = a.v; }; }
