let s = { "foo-bar" = 1; }; p = "bar"; in s."foo-${p}"
