{ outputs = { self }: { legacyPackages = throw "no legacy"; packages.x86_64-linux = { }; }; }
