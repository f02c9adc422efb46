builtins.derivationStrict 1
