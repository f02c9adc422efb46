#!flaked attr=a.b
{ a.b = "selected"; c = throw "not forced"; }
