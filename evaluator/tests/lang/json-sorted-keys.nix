#!flaked json
{ z = 1; a = 2; "B" = 3; }
