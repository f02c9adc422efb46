with builtins; [ (hasContext "x") (getContext "x") (unsafeDiscardStringContext "y") ]
