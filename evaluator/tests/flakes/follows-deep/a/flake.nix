{ inputs.b.url = "path:./b"; outputs = { self, b }: { v = b.v; }; }
