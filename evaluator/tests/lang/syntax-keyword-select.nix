{ "if" = 1; "then" = 2; or = 3; }.or
