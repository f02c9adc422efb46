builtins.path { path = /tmp; name = "x"; sha256 = "1g40qxric862d936864sbzg56xsl858bdh8vrm0r6x4aacvbkr9a"; recursive = false; }
