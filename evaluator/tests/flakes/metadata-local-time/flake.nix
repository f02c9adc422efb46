{ description = "local time"; outputs = { self }: { x = self.lastModifiedDate; }; }
