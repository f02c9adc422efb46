#!flaked json
{ a = { __toString = s: "ts"; }; }
