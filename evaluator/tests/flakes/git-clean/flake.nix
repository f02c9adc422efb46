{ description = "clean git";
  outputs = { self }: { x = { inherit (self) rev shortRev revCount lastModified lastModifiedDate; }; hello = builtins.readFile ./hello.txt; }; }
