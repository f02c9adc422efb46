{ outputs = { self }: { x = throw "boom"; y = { a = 1; }; }; }
