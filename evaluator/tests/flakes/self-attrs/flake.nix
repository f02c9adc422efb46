{ description = "self"; outputs = { self }: { x = { t = self._type; hasOut = self ? outPath; names = builtins.attrNames self; }; }; }
