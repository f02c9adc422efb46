with builtins; [ (split "(a)b" "xabyab") (match "a(.*)c" "abbc") (match "x" "y") (match "([0-9]+)-([a-z]*)" "12-ab") (split "," "a,b,,c") ]
