{ inputs.a.url = "foo:bar:baz"; outputs = { self, a }: { x = 1; }; }
