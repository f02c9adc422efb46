{ inputs.data = { url = "path:./data"; flake = false; };
  outputs = { self, data }: { x = builtins.readFile (data + "/hello.txt"); }; }
