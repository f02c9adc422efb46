#!flaked json
{ a = [ 1 (throw "json forces") ]; }
