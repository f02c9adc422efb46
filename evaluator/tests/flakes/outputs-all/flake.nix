{ description = "every output type";
  outputs = { self }: let
    drv = name: derivation { inherit name; system = "x86_64-linux"; builder = "/bin/sh"; args = [ "-c" "echo > $out" ]; };
  in {
    packages.x86_64-linux = { default = drv "hello"; other = drv "other" // { meta.description = "the other one"; }; };
    packages.aarch64-linux.default = drv "arm";
    legacyPackages.x86_64-linux = { a = drv "a"; };
    apps.x86_64-linux.default = { type = "app"; program = "/bin/sh"; meta.description = "a shell"; };
    apps.x86_64-linux.nodesc = { type = "app"; program = "/bin/sh"; };
    devShells.x86_64-linux.default = drv "shell";
    checks.x86_64-linux.test = drv "test";
    formatter.x86_64-linux = drv "fmt";
    overlays.default = final: prev: { };
    nixosModules.default = { ... }: { };
    nixosConfigurations = { };
    templates.default = { path = ./.; description = "a template"; };
    lib = { x = 1; f = a: a; };
    hydraJobs.build.x86_64-linux = drv "job";
  }; }
