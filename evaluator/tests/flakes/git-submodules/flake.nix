{ outputs = { self }: { x = builtins.readFile ./sub/s.txt; y = builtins.pathExists ./sub/d/y; z = builtins.pathExists ./sub; }; }
