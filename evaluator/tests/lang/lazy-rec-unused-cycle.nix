(rec { a = b; b = a; c = 1; }).c
