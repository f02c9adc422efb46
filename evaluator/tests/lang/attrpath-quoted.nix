#!flaked attr="a.b".c
{ "a.b".c = 7; }
