{ outputs = { self }: { x = 1 +; }; }
