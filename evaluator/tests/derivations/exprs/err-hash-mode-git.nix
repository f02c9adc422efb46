(derivation { name = "a"; builder = "/bin/sh"; system = "x86_64-linux"; outputHashMode = "git"; outputHash = "sha1-2jmj7l5rSw0yVb/vlWAYkK/YBwk="; }).drvPath
