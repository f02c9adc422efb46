#!flaked raw
"a\nb\ttab \"q\" \\ \${x} $$ end"
