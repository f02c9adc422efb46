{ outputs = { self }: { v = "sibling"; }; }
