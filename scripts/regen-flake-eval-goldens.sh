#!/usr/bin/env bash
# Regenerates evaluator/tests/flakes/: flake layouts and what the reference Nix 2.26 answers for
# them. Run from anywhere; needs the oracle (/work/shared/oracle/nix) and git.
#
# A layout is a directory of flake sources, plus optionally:
#   input.lock  copied to flake.lock before the first step
#   The user registry of every step is $XDG_CONFIG_HOME/nix/registry.json with
#               XDG_CONFIG_HOME = "<copy>-config", outside the flake's tree (setup.sh may write it)
#   setup.sh    run with `sh` in the copy before the first step (creates Git repositories at run
#               time: no .git directory is committed), with a fixed Git identity and dates
#   tz          a time zone name: every step runs with TZ set to it (the test runs such layouts
#               in a child process with that TZ)
#   cases       the steps, one per line: `ID COMMAND ARGS…` (default: `1 lock` and
#               `2 eval --json .#x`). Commands: lock [--update-input P] [--override-input P REF]
#               [--recreate-lock-file] | update [INPUT…] | eval [--json|--raw]
#               [--no-write-lock-file] INSTALLABLE | metadata (--json) | show [--all-systems]
#               [--legacy] (--json) | metadata-text | show-text [--all-systems] [--legacy]
#               (without --json) | expr [FLAGS] :: EXPRESSION (`nix eval FLAGS --expr EXPRESSION` in the
#               copy) | sh CMD (mutates the copy; its output is not recorded).
# For every step except `sh`, expected/ID.{out,err,rc} hold stdout, stderr and the exit code, and
# expected/ID.lock the flake.lock bytes after the step (absent: no lock file).
#
# Normalisation (the same in evaluator/tests/flakes.rs), applied to out, err and lock:
#   - the copy's absolute path            -> FLAKE
#   - /nix/store/<32 chars>-              -> /nix/store/HASH-  (the tests use a private store
#     directory, so store path hashes differ; narHashes are compared exactly)
#   - lastModified values >= 1600000000   -> N  (path inputs take it from file mtimes, i.e. the
#     time of the run; Git fixtures commit at fixed dates around 1500000000, kept exactly),
#     and the dates ` (YYYY-MM-DD)` from 2020 on in lock file diffs -> (DATE) and the
#     `Last modified: ` time of text metadata from 2020 on -> DATE, for the same reason
#   - ANSI escapes are removed (Nix removes them from stderr when it is not a terminal; the
#     bold/colour markers of the text outputs on stdout are not compared).
set -euo pipefail
NIX=${NIX:-/work/shared/oracle/nix}
ROOT=$(cd "$(dirname "$0")/.." && pwd)
OUT=$ROOT/evaluator/tests/flakes
# notyetpassing.txt (maintained by hand, see evaluator/tests/flakes.rs) survives regeneration.
keep=$(cat "$OUT/notyetpassing.txt" 2>/dev/null || true)
rm -rf "$OUT"; mkdir -p "$OUT"
[ -n "$keep" ] && printf '%s\n' "$keep" > "$OUT/notyetpassing.txt"

mk() { mkdir -p "$OUT/$1/$(dirname "$2")"; cat > "$OUT/$1/$2"; }

# The fixed Git environment of setup.sh and sh steps (the test sets the same).
export GIT_AUTHOR_NAME=flaked GIT_AUTHOR_EMAIL=flaked@example.org
export GIT_COMMITTER_NAME=flaked GIT_COMMITTER_EMAIL=flaked@example.org
export GIT_AUTHOR_DATE='1500000000 +0000' GIT_COMMITTER_DATE='1500000000 +0000'
export GIT_CONFIG_NOSYSTEM=1 GIT_CONFIG_GLOBAL=/dev/null

mk no-inputs flake.nix <<'N'
{ description = "no inputs"; outputs = { self }: { x = 1 + 2; }; }
N
mk one-path flake.nix <<'N'
{ inputs.sub.url = "path:./sub"; outputs = { self, sub }: { x = sub.v + 1; }; }
N
mk one-path sub/flake.nix <<'N'
{ outputs = { self }: { v = 41; }; }
N
mk non-flake flake.nix <<'N'
{ inputs.data = { url = "path:./data"; flake = false; };
  outputs = { self, data }: { x = builtins.readFile (data + "/hello.txt"); }; }
N
mk non-flake data/hello.txt <<'N'
hello
N
mk nested flake.nix <<'N'
{ inputs.a.url = "path:./a"; outputs = { self, a }: { x = a.v + a.inputs.b.v; }; }
N
mk nested a/flake.nix <<'N'
{ inputs.b.url = "path:./b"; outputs = { self, b }: { v = b.v * 10; }; }
N
mk nested a/b/flake.nix <<'N'
{ outputs = { self }: { v = 7; }; }
N
mk follows flake.nix <<'N'
{ inputs.a.url = "path:./a"; inputs.c.url = "path:./c";
  inputs.a.inputs.b.follows = "c";
  outputs = { self, a, c }: { x = a.v; }; }
N
mk follows a/flake.nix <<'N'
{ inputs.b.url = "path:./b"; outputs = { self, b }: { v = b.name; }; }
N
mk follows a/b/flake.nix <<'N'
{ outputs = { self }: { name = "b"; }; }
N
mk follows c/flake.nix <<'N'
{ outputs = { self }: { name = "c"; }; }
N
mk top-follows flake.nix <<'N'
{ inputs.a.url = "path:./a"; inputs.b.follows = "a";
  outputs = { self, a, b }: { x = [ a.v b.v ]; }; }
N
mk top-follows a/flake.nix <<'N'
{ outputs = { self }: { v = "a"; }; }
N
mk self-attrs flake.nix <<'N'
{ description = "self"; outputs = { self }: { x = { t = self._type; hasOut = self ? outPath; names = builtins.attrNames self; }; }; }
N
mk packages-prefix flake.nix <<'N'
{ outputs = { self }: { packages.x86_64-linux.x = "from packages"; x = "top"; }; }
N
mk legacy-prefix flake.nix <<'N'
{ outputs = { self }: { legacyPackages.x86_64-linux.x = "from legacy"; }; }
N
mk input-attrs flake.nix <<'N'
{ inputs.sub = { type = "path"; path = "./sub"; };
  outputs = { self, sub }: { x = sub.v; }; }
N
mk input-attrs sub/flake.nix <<'N'
{ outputs = { self }: { v = "typed"; }; }
N
mk self-outputs flake.nix <<'N'
{ outputs = { self }: { a = 5; x = self.a * 2 + self.outputs.a; }; }
N
mk unsupported-attr flake.nix <<'N'
{ foo = 1; outputs = { self }: { x = 1; }; }
N
mk outputs-not-function flake.nix <<'N'
{ outputs = { x = 1; }; }
N
mk no-outputs flake.nix <<'N'
{ description = "nothing"; }
N
mk stale-lock flake.nix <<'N'
{ inputs.sub.url = "path:./sub"; outputs = { self, sub }: { x = sub.v; }; }
N
mk stale-lock sub/flake.nix <<'N'
{ outputs = { self }: { v = "kept"; }; }
N
# A lock file with an unused entry (dropped) and the used one (kept).
mk stale-lock input.lock <<'N'
{
  "nodes": {
    "old": {
      "locked": {
        "path": "./old",
        "type": "path"
      },
      "original": {
        "path": "./old",
        "type": "path"
      },
      "parent": []
    },
    "root": {
      "inputs": {
        "old": "old",
        "sub": "sub"
      }
    },
    "sub": {
      "locked": {
        "path": "./sub",
        "type": "path"
      },
      "original": {
        "path": "./sub",
        "type": "path"
      },
      "parent": []
    }
  },
  "root": "root",
  "version": 7
}
N

# ---- Layouts with explicit steps (file `cases`: one step per line, `ID COMMAND ARGS…`). ----
# Steps: lock [flags] | update [inputs] | eval [--json|--raw] [--no-write-lock-file] INSTALLABLE |
#        metadata | show [--all-systems] | sh SHELL-COMMAND (run in both, output ignored).

mk relock flake.nix <<'N'
{ inputs.sub.url = "path:./sub"; outputs = { self, sub }: { x = sub.v; }; }
N
mk relock sub/flake.nix <<'N'
{ outputs = { self }: { v = 1; }; }
N
mk relock cases <<'N'
1 lock
2 lock
3 eval --json .#x
4 metadata
5 metadata-text
N

mk git-clean flake.nix <<'N'
{ description = "clean git";
  outputs = { self }: { x = { inherit (self) rev shortRev revCount lastModified lastModifiedDate; }; hello = builtins.readFile ./hello.txt; }; }
N
mk git-clean hello.txt <<'N'
hello from git
N
mk git-clean setup.sh <<'N'
git init -q -b main . && git add flake.nix hello.txt && git commit -q -m init
N
mk git-clean cases <<'N'
1 lock
2 eval --json .#x
3 eval --raw .#hello
4 metadata
5 show
6 metadata-text
7 show-text
N

mk git-dirty flake.nix <<'N'
{ outputs = { self }: { x = { d = self.dirtyRev or null; ds = self.dirtyShortRev or null; untracked = builtins.pathExists "${self}/untracked.txt"; tracked = builtins.readFile "${self}/a.txt"; }; }; }
N
mk git-dirty a.txt <<'N'
committed
N
mk git-dirty setup.sh <<'N'
git init -q -b main . && git add flake.nix a.txt && git commit -q -m init && echo modified > a.txt && echo new > untracked.txt
N
mk git-dirty cases <<'N'
1 eval --json .#x
2 metadata
N

mk git-input flake.nix.in <<'N'
{ inputs.dep.url = "git+file://@PWD@/dep";
  inputs.data = { url = "git+file://@PWD@/dep?ref=refs/tags/v1"; flake = false; };
  outputs = { self, dep, data }: { x = { v = dep.v; rev = dep.rev; count = dep.revCount; old = builtins.readFile "${data}/v.txt"; }; }; }
N
mk git-input setup.sh <<'N'
sed "s#@PWD@#$PWD#g" flake.nix.in > flake.nix && rm flake.nix.in
mkdir dep && cd dep && git init -q -b main . && echo 1 > v.txt && echo '{ outputs = { self }: { v = builtins.readFile ./v.txt; }; }' > flake.nix && git add . && git commit -q -m one && git tag v1 && echo 2 > v.txt && GIT_COMMITTER_DATE='1500000100 +0000' git commit -q -a -m two
N
mk git-input cases <<'N'
1 lock
2 eval --json .#x
3 sh cd dep && echo 3 > v.txt && GIT_COMMITTER_DATE='1500000200 +0000' git commit -q -a -m three
4 lock
5 eval --json .#x
6 update dep
7 eval --json .#x
8 sh cd dep && echo 4 > v.txt && GIT_COMMITTER_DATE='1500000300 +0000' git commit -q -a -m four
9 update
10 eval --json .#x
N

mk follows-deep flake.nix <<'N'
{ inputs.a.url = "path:./a"; inputs.c.url = "path:./c";
  inputs.a.inputs.b.inputs.c.follows = "c";
  outputs = { self, a, c }: { x = a.v; }; }
N
mk follows-deep a/flake.nix <<'N'
{ inputs.b.url = "path:./b"; outputs = { self, b }: { v = b.v; }; }
N
mk follows-deep a/b/flake.nix <<'N'
{ inputs.c.url = "path:./c"; outputs = { self, c }: { v = c.name; }; }
N
mk follows-deep a/b/c/flake.nix <<'N'
{ outputs = { self }: { name = "deep c"; }; }
N
mk follows-deep c/flake.nix <<'N'
{ outputs = { self }: { name = "top c"; }; }
N

mk follows-inner flake.nix <<'N'
{ inputs.a.url = "path:./a"; outputs = { self, a }: { x = a.v; }; }
N
mk follows-inner a/flake.nix <<'N'
{ inputs.b.url = "path:./b"; inputs.c.follows = "b";
  outputs = { self, b, c }: { v = [ b.n c.n ]; }; }
N
mk follows-inner a/b/flake.nix <<'N'
{ outputs = { self }: { n = "b"; }; }
N

mk follows-empty flake.nix <<'N'
{ inputs.a.url = "path:./a"; inputs.a.inputs.b.follows = "";
  outputs = { self, a }: { x = a.v; }; }
N
mk follows-empty a/flake.nix <<'N'
{ inputs.b.url = "path:./b"; outputs = { self, b }: { v = builtins.attrNames b; }; }
N
mk follows-empty a/b/flake.nix <<'N'
{ outputs = { self }: { n = "b"; }; }
N

mk own-lock flake.nix <<'N'
{ inputs.a.url = "path:./a"; outputs = { self, a }: { x = a.v; }; }
N
mk own-lock a/flake.nix <<'N'
{ inputs.b.url = "path:./b"; outputs = { self, b }: { v = b.n; }; }
N
mk own-lock a/b/flake.nix <<'N'
{ outputs = { self }: { n = "from b"; }; }
N
mk own-lock a/flake.lock <<'N'
{
  "nodes": {
    "b": {
      "locked": {
        "path": "./b",
        "type": "path"
      },
      "original": {
        "path": "./b",
        "type": "path"
      },
      "parent": []
    },
    "root": {
      "inputs": {
        "b": "b"
      }
    }
  },
  "root": "root",
  "version": 7
}
N

mk outputs-all flake.nix <<'N'
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
N
mk outputs-all cases <<'N'
1 lock
2 show
3 show --all-systems
4 eval --json .#lib.x
5 eval --json .#templates.default.description
6 eval --raw .#default
7 eval --raw .#other
8 eval --raw .#a
9 eval --raw .
10 eval --json .#nope
11 eval --json .#.packages.x86_64-linux.other.name
12 metadata
13 show-text
14 show-text --all-systems
N

mk syntax-error flake.nix <<'N'
{ outputs = { self }: { x = 1 +; }; }
N

mk bad-input-attr flake.nix <<'N'
{ inputs.a = { url = "path:./a"; foo = 1; }; outputs = { self, a }: { x = 1; }; }
N
mk bad-input-attr a/flake.nix <<'N'
{ outputs = { self }: { }; }
N

mk malformed-ref flake.nix <<'N'
{ inputs.a.url = "foo:bar:baz"; outputs = { self, a }: { x = 1; }; }
N

mk missing-input flake.nix <<'N'
{ inputs.a.url = "path:./does-not-exist"; outputs = { self, a }: { x = 1; }; }
N

mk missing-input-flake flake.nix <<'N'
{ inputs.a.url = "path:./a"; outputs = { self, a }: { x = 1; }; }
N
mk missing-input-flake a/readme.txt <<'N'
no flake here
N

mk corrupt-lock flake.nix <<'N'
{ outputs = { self }: { x = 1; }; }
N
mk corrupt-lock input.lock <<'N'
{ "nodes": { "root": { } }, "root": "root", "version": 7
N

mk lock-bad-version flake.nix <<'N'
{ outputs = { self }: { x = 1; }; }
N
mk lock-bad-version input.lock <<'N'
{
  "nodes": {
    "root": {}
  },
  "root": "root",
  "version": 99
}
N

mk follows-cycle flake.nix <<'N'
{ inputs.a.follows = "b"; inputs.b.follows = "a"; outputs = { self, a, b }: { x = 1; }; }
N

mk follows-missing flake.nix <<'N'
{ inputs.a.follows = "nope"; outputs = { self, a }: { x = 1; }; }
N

mk override-input flake.nix <<'N'
{ inputs.sub.url = "path:./sub"; outputs = { self, sub }: { x = sub.v; }; }
N
mk override-input sub/flake.nix <<'N'
{ outputs = { self }: { v = "original"; }; }
N
mk override-input other/flake.nix <<'N'
{ outputs = { self }: { v = "override"; }; }
N
mk override-input cases <<'N'
1 lock --override-input sub path:./other
2 eval --json .#x
N

mk no-write flake.nix <<'N'
{ inputs.sub.url = "path:./sub"; outputs = { self, sub }: { x = sub.v; }; }
N
mk no-write sub/flake.nix <<'N'
{ outputs = { self }: { v = "not written"; }; }
N
mk no-write cases <<'N'
1 eval --json --no-write-lock-file .#x
2 eval --json .#x
N

mk default-package flake.nix <<'N'
{ outputs = { self }: { defaultPackage.x86_64-linux = "old default"; }; }
N
mk default-package cases <<'N'
1 eval --json .
2 eval --json .#
N

mk input-subdir flake.nix <<'N'
{ inputs.s.url = "path:./tree?dir=inner"; outputs = { self, s }: { x = s.v; }; }
N
mk input-subdir tree/inner/flake.nix <<'N'
{ outputs = { self }: { v = "in a subdir"; }; }
N

mk nonflake-file flake.nix <<'N'
{ inputs.cfg = { url = "path:./cfg"; flake = false; };
  outputs = { self, cfg }: { x = import (cfg + "/default.nix"); }; }
N
mk nonflake-file cfg/default.nix <<'N'
{ answer = 42; }
N

mk git-subdir sub/flake.nix <<'N'
{ description = "in a subdirectory";
  inputs.sibling.url = "path:../sibling";
  outputs = { self, sibling }: { x = { s = sibling.v; d = self.outPath == self.sourceInfo.outPath; }; }; }
N
mk git-subdir sibling/flake.nix <<'N'
{ outputs = { self }: { v = "sibling"; }; }
N
mk git-subdir setup.sh <<'N'
git init -q -b main . && git add sub/flake.nix sibling/flake.nix && git commit -q -m init
N
mk git-subdir cases <<'N'
1 lock ./sub
2 eval --json ./sub#x
3 metadata ./sub
4 show ./sub
5 lock ./sub
N

mk registry flake.nix <<'N'
{ inputs.t.url = "flake:target";
  outputs = { self, t, target }: { x = [ t.v target.v ]; }; }
N
mk registry target/flake.nix <<'N'
{ outputs = { self }: { v = "from the registry"; }; }
N
mk registry setup.sh <<'N'
mkdir -p "$XDG_CONFIG_HOME/nix" && printf '{"flakes":[{"from":{"id":"target","type":"indirect"},"to":{"path":"%s/target","type":"path"}}],"version":2}\n' "$PWD" > "$XDG_CONFIG_HOME/nix/registry.json"
N
mk registry cases <<'N'
1 lock
2 eval --json .#x
N

mk registry-ref flake.nix <<'N'
{ inputs.pinned.url = "target/main"; outputs = { self, pinned }: { x = pinned.v; }; }
N
mk registry-ref target/flake.nix <<'N'
{ outputs = { self }: { v = 1; }; }
N
mk registry-ref setup.sh <<'N'
mkdir -p "$XDG_CONFIG_HOME/nix" && printf '{"flakes":[{"from":{"id":"target","type":"indirect"},"to":{"path":"%s/target","type":"path"}}],"version":2}\n' "$PWD" > "$XDG_CONFIG_HOME/nix/registry.json"
N

mk builtins-flakes flake.nix <<'N'
{ description = "for getFlake";
  inputs.sub.url = "path:./sub";
  outputs = { self, sub }: { v = sub.v + 1; lib.greet = n: "hello ${n}"; }; }
N
mk builtins-flakes sub/flake.nix <<'N'
{ outputs = { self }: { v = 41; }; }
N
mk builtins-flakes setup.sh <<'N'
git init -q -b main . && git add flake.nix sub/flake.nix && git commit -q -m init
N
mk builtins-flakes cases <<'N'
1 expr --json :: builtins.parseFlakeRef "github:NixOS/nixpkgs/23.05?dir=lib"
2 expr --json :: builtins.parseFlakeRef "git+file:///x?ref=a&rev=0123456789012345678901234567890123456789&revCount=5"
3 expr --json :: builtins.parseFlakeRef "./relative"
4 expr --json :: builtins.flakeRefToString { type = "github"; owner = "a"; repo = "b"; ref = "c"; dir = "d"; }
5 expr --json :: builtins.flakeRefToString { type = "github"; owner = "a"; repo = 1.5; }
6 expr --json :: builtins.flakeRefToString { type = "path"; path = "/x"; revCount = -1; }
7 expr --json :: (builtins.getFlake "git+file://${toString ./.}").v
8 expr --json --impure :: (builtins.getFlake "git+file://${toString ./.}").v
9 expr --json --impure :: (builtins.getFlake (toString ./.)).lib.greet "you"
10 expr --json :: let f = builtins.getFlake "git+file://${toString ./.}?rev=4e8d3c3b1d8c4ea1a6a0b9e0c57dbd5f5d2c0a3c"; in f.v
11 expr --json --impure :: let f = builtins.getFlake "git+file://${toString ./.}"; in [ f.rev (builtins.getFlake "git+file://${toString ./.}?rev=${f.rev}").v f._type (builtins.attrNames f.inputs) f.sourceInfo.revCount ]
12 lock
13 expr --json --impure :: let f = builtins.getFlake (toString ./.); in [ f.outPath f.inputs.sub.v ]
N

mk outputs-throw flake.nix <<'N'
{ outputs = { self }: { x = throw "boom"; y = { a = 1; }; }; }
N
mk outputs-throw cases <<'N'
1 eval --json .#x
2 eval --json .#y.b
N

mk show-legacy flake.nix <<'N'
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
N
mk show-legacy cases <<'N'
1 show-text --legacy
2 show --legacy
3 show-text --legacy --all-systems
4 show --legacy --all-systems
5 show-text
6 show
N

mk show-legacy-throw flake.nix <<'N'
{ outputs = { self }: { legacyPackages = throw "no legacy"; packages.x86_64-linux = { }; }; }
N
mk show-legacy-throw cases <<'N'
1 show-text --legacy
2 show --legacy
N

mk show-bad-type flake.nix <<'N'
{ outputs = { self }: { packages.x86_64-linux.foo = { type = 3; }; }; }
N
mk show-bad-type cases <<'N'
1 show-text
2 show
N

# Git submodules (`?submodules=1`): the submodule's source is an untracked repository inside the
# work tree (invisible to the flake), added with a relative URL.
mk git-submodules flake.nix <<'N'
{ outputs = { self }: { x = builtins.readFile ./sub/s.txt; y = builtins.pathExists ./sub/d/y; z = builtins.pathExists ./sub; }; }
N
mk git-submodules setup.sh <<'N'
mkdir .subsrc && (cd .subsrc && git init -q -b main && echo "from the submodule" > s.txt && mkdir d && echo y > d/y && git add s.txt d/y && git commit -q -m sub) && git init -q -b main . && git -c protocol.file.allow=always submodule add -q ./.subsrc sub && git add flake.nix && git commit -q -m init
N
mk git-submodules cases <<'N'
1 eval --json .?submodules=1#x
2 metadata .?submodules=1
3 eval --json .?submodules=1#y
4 eval --json .?submodules=1&ref=main#x
5 metadata .?submodules=1&ref=main
6 eval --json .#y
7 eval --json .#z
8 sh echo changed > sub/s.txt
9 eval --json .?submodules=1#x
10 metadata .?submodules=1
N

# A layout with a `tz` file runs every step with TZ set to its contents: the flake's own "Last
# modified" is local time in Nix (the Git fixture commits at 1500000000 = 2017-07-14 02:40 UTC,
# the day before in Los Angeles), the dates of inputs are UTC.
mk metadata-local-time flake.nix <<'N'
{ description = "local time"; outputs = { self }: { x = self.lastModifiedDate; }; }
N
mk metadata-local-time setup.sh <<'N'
git init -q -b main . && git add flake.nix && git commit -q -m init
N
printf 'America/Los_Angeles\n' > "$OUT/metadata-local-time/tz"
mk metadata-local-time cases <<'N'
1 lock
2 metadata-text
3 metadata
4 eval --json .#x
N

scrub() { # $1 = copy's path
  sed -e 's#\x1b\[[0-9;]*[A-Za-z]##g' \
      -e "s#$1#FLAKE#g" \
      -e 's#/nix/store/[0-9a-z]\{32\}-#/nix/store/HASH-#g' \
      -e 's#\("lastModified": \{0,1\}\)1[6-9][0-9]\{8\}#\1N#g' \
      -e 's#\(lastModified=\)1[6-9][0-9]\{8\}#\1N#g' \
      -e 's#(20[2-9][0-9]-[0-9][0-9]-[0-9][0-9])#(DATE)#g' \
      -e 's#^\(Last modified: \)20[2-9][0-9]-.*#\1DATE#'
}

for d in "$OUT"/*/; do
  d=${d%/}
  name=$(basename "$d")
  work=$(mktemp -d /tmp/flake-golden.XXXXXX)
  tmp=$(mktemp -d /tmp/flake-golden-out.XXXXXX)
  (cd "$d" && tar --exclude=./cases --exclude=./setup.sh --exclude=./input.lock --exclude=./tz -cf - .) | (cd "$work" && tar xf -)
  tz=; [ -f "$d/tz" ] && tz=$(cat "$d/tz")
  [ -f "$d/input.lock" ] && cp "$d/input.lock" "$work/flake.lock"
  mkdir -p "$work-config"
  [ -f "$d/setup.sh" ] && (cd "$work" && HOME=$work XDG_CONFIG_HOME=$work-config sh "$d/setup.sh" >/dev/null 2>&1)
  cases=$d/cases
  if [ ! -f "$cases" ]; then cases=$tmp/cases; printf '1 lock\n2 eval --json .#x\n' > "$cases"; fi
  mkdir -p "$d/expected"
  while read -r id cmd rest; do
    [ -z "$id" ] && continue
    if [ "$cmd" = sh ]; then (cd "$work" && HOME=$work XDG_CONFIG_HOME=$work-config sh -c "$rest" >/dev/null 2>&1); continue; fi
    case $cmd in
      expr) args=(eval ${rest%% :: *} --expr "${rest#* :: }") ;;
      lock) args=(flake lock $rest) ;;
      update) args=(flake update $rest) ;;
      eval) args=(eval $rest) ;;
      metadata) args=(flake metadata --json $rest) ;;
      metadata-text) args=(flake metadata $rest) ;;
      show-text) args=(flake show $rest) ;;
      show) args=(flake show --json $rest) ;;
      *) echo "unknown step '$cmd' in $name" >&2; exit 1 ;;
    esac
    rc=0
    (cd "$work" && if [ -n "$tz" ]; then export TZ=$tz; fi && XDG_CONFIG_HOME=$work-config "$NIX" "${args[@]}" >"$tmp/out" 2>"$tmp/err") || rc=$?
    scrub "$work" < "$tmp/out" > "$d/expected/$id.out"
    scrub "$work" < "$tmp/err" > "$d/expected/$id.err"
    echo "$rc" > "$d/expected/$id.rc"
    if [ -f "$work/flake.lock" ]; then scrub "$work" < "$work/flake.lock" > "$d/expected/$id.lock"; fi
  done < "$cases"
  rm -rf "$work" "$work-config" "$tmp"
done
echo "regenerated $(ls -d "$OUT"/*/ | wc -l) layouts in $OUT"
