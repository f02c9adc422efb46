{ outputs = { self }: { v = "override"; }; }
