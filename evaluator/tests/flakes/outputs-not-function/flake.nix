{ outputs = { x = 1; }; }
