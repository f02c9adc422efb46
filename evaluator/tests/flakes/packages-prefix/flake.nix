{ outputs = { self }: { packages.x86_64-linux.x = "from packages"; x = "top"; }; }
