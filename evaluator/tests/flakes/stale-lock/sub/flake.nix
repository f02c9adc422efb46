{ outputs = { self }: { v = "kept"; }; }
