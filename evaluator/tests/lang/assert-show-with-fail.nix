assert with { x = false; }; x; 1
