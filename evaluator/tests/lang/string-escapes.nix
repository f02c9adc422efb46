[ "a\nb" "tab\there" "cr\rx" "quote\"" "back\\slash" "dollar\${x}" "\$" "\q" "$" "$$" "a$b" ]
