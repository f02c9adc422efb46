{ outputs = { self }: { name = "b"; }; }
