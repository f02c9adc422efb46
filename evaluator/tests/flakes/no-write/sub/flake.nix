{ outputs = { self }: { v = "not written"; }; }
