with builtins; [ (compareVersions "1.0" "1.1") (compareVersions "2.0" "1.9") (compareVersions "1.0pre1" "1.0") (splitVersion "1.2.3pre4") (parseDrvName "hello-2.10") ]
