{ outputs = { self }: { v = "from the registry"; }; }
