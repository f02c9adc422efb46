let x = "bar"; in [ /foo/${x} ./a/${x}/c /foo/${x}.nix ]
