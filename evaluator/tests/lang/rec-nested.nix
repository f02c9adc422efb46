rec { a = { x = b; }; b = 3; }.a.x
