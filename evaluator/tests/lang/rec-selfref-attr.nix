rec { x = 1; y = { x = 2; z = x; }; }.y.z
