[ /foo /foo/bar/baz /. ]
