builtins.toFile "hello.txt" "hi there"
