[ (map (x: x + 1) [ 1 ]) (isNull null) (toString 1) (baseNameOf "/a/b") (removeAttrs { a = 1; } [ "a" ]) (builtins.null == null) (builtins.true) ]
