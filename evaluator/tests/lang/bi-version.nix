[ builtins.langVersion (builtins.isString builtins.nixVersion) ]
