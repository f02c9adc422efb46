{ outputs = { self }: { name = "deep c"; }; }
