{ outputs = { self }: { n = "b"; }; }
