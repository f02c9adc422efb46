#!flaked json
{ p = /foo/bar; }
