{ outputs = { self }: { name = "top c"; }; }
