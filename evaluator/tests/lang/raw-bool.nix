#!flaked raw
true
