[ ./foo ./foo/bar ./data/../x ./. ]
