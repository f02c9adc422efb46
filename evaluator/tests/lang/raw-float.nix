#!flaked raw
1.5
