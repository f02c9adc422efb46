rec { ${"a"} = b; a = 3; }
