/* flaked: the `derivation` builtin, a lazy wrapper around `derivationStrict`.

  Nix 2.26 defines `derivation` by evaluating a Nix file embedded in the binary
  (shown as <nix/derivation-internal.nix>). Error traces and `nix eval` output
  point into that file by line and column, so this file keeps the code at the
  same lines (the evaluator prepends one empty line, as Nix's embedding does):
  the lambda starts at line 30 and `derivationStrict` is called at 37:12.

  What the wrapper does:

  * `derivationStrict` builds the store derivation (writing the .drv) and
    returns `drvPath` plus one attribute per output, holding output paths.
    It is only forced when one of those attributes is needed.

  * The result is the attribute set of the first output in `outputs`:
    the original attributes, one attribute per output (each again such a
    set), `all` (the list of those sets), `drvAttrs` (the argument),
    `outPath`, `drvPath`, `type = "derivation"` and `outputName`.

  Only the layout below this comment matters for compatibility; the text of
  this comment is flaked's own.






*/
drvAttrs@{
  outputs ? [ "out" ],
  ...
}:

let

  strict = derivationStrict drvAttrs;

  commonAttrs =
    drvAttrs
    // (builtins.listToAttrs outputsList)
    // {
      all = map (x: x.value) outputsList;
      inherit drvAttrs;
    };

  outputToAttrListElement = outputName: {
    name = outputName;
    value = commonAttrs // {
      outPath = builtins.getAttr outputName strict;
      drvPath = strict.drvPath;
      type = "derivation";
      inherit outputName;
    };
  };

  outputsList = map outputToAttrListElement outputs;

in
(builtins.head outputsList).value
