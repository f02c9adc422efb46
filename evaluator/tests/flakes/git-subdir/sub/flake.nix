{ description = "in a subdirectory";
  inputs.sibling.url = "path:../sibling";
  outputs = { self, sibling }: { x = { s = sibling.v; d = self.outPath == self.sourceInfo.outPath; }; }; }
