[ /foo/./bar /foo/../bar ./a/../b /a/b/../../.. ]
