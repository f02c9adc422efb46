{ outputs = { self }: { v = "typed"; }; }
