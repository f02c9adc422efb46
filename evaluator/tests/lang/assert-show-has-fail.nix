let s = { }; in assert s ? a.b || s ? "c d"; 1
