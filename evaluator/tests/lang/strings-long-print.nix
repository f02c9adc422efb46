{ s = builtins.concatStringsSep "" (builtins.genList (i: "abcdefghij") 30); }
