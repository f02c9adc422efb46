{ inputs.cfg = { url = "path:./cfg"; flake = false; };
  outputs = { self, cfg }: { x = import (cfg + "/default.nix"); }; }
