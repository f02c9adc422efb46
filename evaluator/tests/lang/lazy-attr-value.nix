builtins.attrNames { a = throw "no"; }
