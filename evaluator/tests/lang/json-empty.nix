#!flaked json
[ { } [ ] "" ]
