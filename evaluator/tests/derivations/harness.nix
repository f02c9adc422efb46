# Evaluates every case of cases.nix to its derivation path and output paths.
{ fixtures }:
let
  cases = import ./cases.nix { inherit fixtures; };
  outNames = d:
    if d ? type then d.outputs or [ "out" ]
    else builtins.filter (n: n != "drvPath") (builtins.attrNames d);
  outPath = v: if builtins.isString v then v else v.outPath;
  info = d: {
    drvPath = d.drvPath;
    outputs = builtins.listToAttrs (map (o: { name = o; value = outPath d.${o}; }) (outNames d));
  };
in
builtins.mapAttrs (_: info) cases
