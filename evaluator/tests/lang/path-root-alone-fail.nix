[ /foo /foo/bar/baz / ]
