[ (baseNameOf ./foo/bar.nix) (dirOf /foo/bar) (dirOf "a/b") (baseNameOf "x/y/") (dirOf /.) (dirOf "/") (dirOf "x") ]
