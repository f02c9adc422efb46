{ outputs = { self }: { v = 7; }; }
