[ (builtins.typeOf ./x) (builtins.typeOf (toString ./x)) (builtins.isPath /a) ]
