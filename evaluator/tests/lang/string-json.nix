#!flaked json
[ "a\nb" "tab\t" "quote\"" "\\" "\r" "unicode é 日" (builtins.fromJSON ''"\u0001\u001f"'') "$" ]
