#!flaked raw
[ "a" ]
