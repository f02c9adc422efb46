{ outputs = { self }: { a = 5; x = self.a * 2 + self.outputs.a; }; }
