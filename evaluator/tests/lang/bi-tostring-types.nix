with builtins; [ (toString 42) (toString null) (toString true) (toString false) (toString "s") (toString -3) ]
