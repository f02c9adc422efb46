{ foo = 1; bar = 2; fob = 3; }.fooo
