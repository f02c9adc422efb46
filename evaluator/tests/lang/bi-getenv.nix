[ (builtins.getEnv "FLAKED_SURELY_UNSET_VARIABLE") (builtins.getEnv "HOME") ]
