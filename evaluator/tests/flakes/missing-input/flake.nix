{ inputs.a.url = "path:./does-not-exist"; outputs = { self, a }: { x = 1; }; }
