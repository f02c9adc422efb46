builtins.deepSeq { a = [ (throw "deep") ]; } 2
