[ ./foo ./foo/bar ../x ./. ]
