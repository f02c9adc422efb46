{ outputs = { self }: { name = "c"; }; }
