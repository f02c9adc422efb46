# Derivations for tests/tests/builds.rs (goldens: regen.sh, from the reference Nix).
let
  mk = n: deps: cmd: derivation {
    name = "e2e-${n}-1.0";
    system = "x86_64-linux";
    builder = "/bin/sh";
    args = [ "-c" cmd ];
    inherit deps;
  };
  a = mk "a" [ ] "echo building a; echo a > $out";
  b = mk "b" [ a ] "echo building b; echo b > $out";
  c = mk "c" [ b ] "echo c > $out";
  ok = mk "ok" [ ] "echo ok > $out";
  bad1 = mk "bad1" [ ] "echo failing one; exit 2";
  bad2 = mk "bad2" [ ] "echo failing two; exit 3";
  dep = mk "dep" [ bad1 ] "echo x > $out";
  multi = derivation {
    name = "e2e-multi";
    system = "x86_64-linux";
    builder = "/bin/sh";
    outputs = [ "out" "dev" ];
    args = [ "-c" "echo out > $out; echo dev > $dev" ];
  };
in
{
  inherit a b c ok bad1 bad2 dep multi;
  pair = [ c a ];
  nested = { recurseForDerivations = true; inner = ok; skipped = { x = a; }; };
}
