#!flaked json
{ f = x: x; }
