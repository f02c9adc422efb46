builtins.fromJSON "{bad"
