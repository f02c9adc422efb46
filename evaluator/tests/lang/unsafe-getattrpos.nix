let s = {
  a = 1;
    b = 2;
}; in [ (builtins.unsafeGetAttrPos "b" s) (builtins.unsafeGetAttrPos "zz" s) ]
