#!flaked instantiate
{ a = 1; b = throw "strict printing forces this"; }
