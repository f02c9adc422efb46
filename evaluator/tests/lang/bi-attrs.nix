with builtins; let s = { b = 2; a = 1; c = 3; }; in [ (attrNames s) (attrValues s) (hasAttr "a" s) (getAttr "b" s) (removeAttrs s [ "a" "zz" ]) (intersectAttrs { a = 0; z = 0; } s) ]
