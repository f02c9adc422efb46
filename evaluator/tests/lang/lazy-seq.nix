[ (builtins.seq 1 2) (builtins.seq { a = throw "deep"; } "shallow") ]
