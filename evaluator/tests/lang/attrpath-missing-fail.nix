#!flaked attr=a.x
{ a.b = 1; }
