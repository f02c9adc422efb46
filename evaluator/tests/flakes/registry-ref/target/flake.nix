{ outputs = { self }: { v = 1; }; }
