/foo/
