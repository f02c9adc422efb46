{ outputs = { self }: { n = "from b"; }; }
