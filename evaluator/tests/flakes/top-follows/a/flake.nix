{ outputs = { self }: { v = "a"; }; }
