#!/usr/bin/env bash
# Builds the deterministic fixtures the flake/fetcher golden tests use, under DIR ($1):
#   DIR/repo        a Git repository (branch main, tag v1, 3 commits, fixed dates/authors)
#   DIR/dirty       a clone of repo with a modified tracked file and an untracked file
#   DIR/tree        a plain directory with fixed mtimes
#   DIR/src.tar.gz  a tarball of DIR/tree under one top-level directory (fixed mtimes)
#   DIR/flakes/*    flakes whose lock files the oracle writes (path, git, follows, flake=false)
# Used by scripts/regen-flake-goldens.sh (with the reference Nix) and by store/tests/fetchers_*.rs
# (without it): the same commands give the same Git revisions and NAR hashes.
set -euo pipefail
DIR=${1:?usage: flake-fixtures.sh DIR}
rm -rf "$DIR"; mkdir -p "$DIR"
export GIT_CONFIG_GLOBAL=/dev/null GIT_CONFIG_NOSYSTEM=1
export GIT_AUTHOR_NAME=Fixture GIT_AUTHOR_EMAIL=fixture@example.org
export GIT_COMMITTER_NAME=Fixture GIT_COMMITTER_EMAIL=fixture@example.org
g() { git -c init.defaultBranch=main -c commit.gpgsign=false -c core.autocrlf=false "$@"; }
commit() { # commit MESSAGE UNIXTIME
  GIT_AUTHOR_DATE="@$2 +0000" GIT_COMMITTER_DATE="@$2 +0000" g commit -q -m "$1"
}

# --- a Git repository ---
R=$DIR/repo
mkdir -p "$R"; (cd "$R"
  g init -q .
  printf '{ outputs = { self }: { x = 1; }; }\n' > flake.nix
  printf 'hello\n' > README
  g add flake.nix README; commit "first" 1700000000
  mkdir -p sub/dir; printf 'nested\n' > sub/dir/file.txt
  printf '#!/bin/sh\necho hi\n' > run.sh; chmod +x run.sh
  ln -s README link
  g add sub run.sh link; commit "second" 1700000100
  g tag v1
  printf 'hello again\n' > README
  g add README; commit "third" 1700000200
  g checkout -q -b feature
  printf 'feature\n' > feature.txt; g add feature.txt; commit "feature" 1700000300
  g checkout -q main
  printf 'ignored\n' > untracked.txt
)

# --- a dirty clone ---
g clone -q "$R" "$DIR/dirty"
(cd "$DIR/dirty"
  printf 'modified\n' > README
  printf 'not tracked\n' > extra.txt
)

# --- a plain tree with fixed mtimes ---
T=$DIR/tree
mkdir -p "$T/a/b"
printf 'one\n' > "$T/one.txt"; printf 'two\n' > "$T/a/b/two.txt"
printf '#!/bin/sh\n' > "$T/a/exe"; chmod +x "$T/a/exe"; ln -s one.txt "$T/lnk"
find "$T" -exec touch -h -d @1600000000 {} +
touch -h -d @1600000500 "$T/a/b/two.txt"

# --- a tarball with one top-level directory ---
mkdir -p "$DIR/tarsrc"; cp -a "$T" "$DIR/tarsrc/project-1.0"
tar --sort=name --owner=0 --group=0 --numeric-owner -C "$DIR/tarsrc" -cf - project-1.0 | gzip -n > "$DIR/src.tar.gz"
rm -rf "$DIR/tarsrc"

# --- flakes to lock ---
F=$DIR/flakes
mkdir -p "$F/leaf" "$F/mid" "$F/top" "$F/data" "$F/gitdep"
printf '{ outputs = { self }: { v = "leaf"; }; }\n' > "$F/leaf/flake.nix"
printf 'some data\n' > "$F/data/file"
cat > "$F/mid/flake.nix" <<NIX
{
  inputs.leaf.url = "path:$F/leaf";
  inputs.data = { url = "path:$F/data"; flake = false; };
  outputs = { self, leaf, data }: { v = leaf.v; };
}
NIX
cat > "$F/top/flake.nix" <<NIX
{
  inputs.mid.url = "path:$F/mid";
  inputs.leaf.url = "path:$F/leaf";
  inputs.mid.inputs.leaf.follows = "leaf";
  inputs.other.url = "path:$F/mid";
  inputs.repo = { url = "git+file://$R"; flake = false; };
  inputs.tagged = { url = "git+file://$R?ref=v1"; flake = false; };
  inputs.tarball = { url = "file://$DIR/src.tar.gz"; flake = false; };
  outputs = { self, ... }: { };
}
NIX
cat > "$F/gitdep/flake.nix" <<NIX
{
  inputs.repo.url = "git+file://$R?ref=feature";
  inputs.pinned = { url = "git+file://$R?rev=\$(REV)"; flake = false; };
  outputs = { self, ... }: { };
}
NIX
mkdir -p "$F/rel/sub"
printf '{ outputs = { self }: { v = 1; }; }\n' > "$F/rel/sub/flake.nix"
cat > "$F/rel/flake.nix" <<NIX
{
  inputs.sub.url = "path:./sub";
  inputs.leaf.url = "path:$F/leaf";
  inputs.leaf.inputs = { };
  outputs = { self, sub, leaf }: { };
}
NIX
rev2=$(git -C "$R" rev-parse v1)
sed -i "s/\$(REV)/$rev2/; s/?rev=/?ref=main\&rev=/" "$F/gitdep/flake.nix"
for d in leaf mid top data gitdep rel; do find "$F/$d" -exec touch -h -d @1650000000 {} +; done
echo "fixtures in $DIR"
