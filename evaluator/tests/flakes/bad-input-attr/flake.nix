{ inputs.a = { url = "path:./a"; foo = 1; }; outputs = { self, a }: { x = 1; }; }
