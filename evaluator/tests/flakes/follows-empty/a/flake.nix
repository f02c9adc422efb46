{ inputs.b.url = "path:./b"; outputs = { self, b }: { v = builtins.attrNames b; }; }
