{ foo = 1; outputs = { self }: { x = 1; }; }
