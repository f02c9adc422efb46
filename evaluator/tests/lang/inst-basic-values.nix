#!flaked instantiate
[ 1 2.5 "s\n\${x}" null true ./p { "a b" = 1; or = 2; } [ ] { } (1.0 / 3) 1.0e21 ]
