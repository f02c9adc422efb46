#!flaked raw
/foo/bar
