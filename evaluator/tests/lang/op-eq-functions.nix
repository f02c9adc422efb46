let f = x: x; in [ (f == f) ([ f ] == [ f ]) ({ inherit f; } == { inherit f; }) ]
