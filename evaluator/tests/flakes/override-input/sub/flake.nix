{ outputs = { self }: { v = "original"; }; }
