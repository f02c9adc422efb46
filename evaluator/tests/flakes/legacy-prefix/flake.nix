{ outputs = { self }: { legacyPackages.x86_64-linux.x = "from legacy"; }; }
