{ outputs = { self }: { v = "in a subdir"; }; }
