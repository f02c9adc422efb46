{ outputs = { self }: { v = 41; }; }
