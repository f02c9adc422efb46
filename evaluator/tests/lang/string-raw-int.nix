#!flaked raw
1
