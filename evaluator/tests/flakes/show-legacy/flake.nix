{ description = "legacyPackages";
  outputs = { self }: let
    drv = name: derivation { inherit name; system = "x86_64-linux"; builder = "/bin/sh"; };
  in {
    legacyPackages.x86_64-linux = {
      hello = drv "hello";
      described = drv "described" // { meta.description = "has a description"; };
      nested = { deep = drv "deep"; };
      str = "a string";
      broken = throw "boom";
      badName = drv "x" // { name = 5; };
      badType = { type = 3; };
    };
    legacyPackages.aarch64-linux.hello = drv "hello-arm";
    legacyPackages.x86_64-darwin = throw "no darwin";
    legacyPackages.armv7l-linux = { type = 3; foo = drv "foo"; };
    legacyPackages.i686-linux = { };
    packages.x86_64-linux.default = drv "default";
  }; }
