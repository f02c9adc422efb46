#!flaked raw
{ outPath = "/x/y"; }
