{ outputs = { self }: { packages.x86_64-linux.foo = { type = 3; }; }; }
