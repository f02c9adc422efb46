#!flaked raw
null
