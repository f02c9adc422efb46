{ description = "no inputs"; outputs = { self }: { x = 1 + 2; }; }
