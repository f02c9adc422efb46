{ inputs.c.url = "path:./c"; outputs = { self, c }: { v = c.name; }; }
