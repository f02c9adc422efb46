#!flaked json
{ a = { outPath = "/out"; other = 1; }; }
