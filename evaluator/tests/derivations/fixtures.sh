#!/bin/sh
# Creates the fixture trees used by cases.nix in directory $1 (must not exist or be empty).
# Shared by scripts/regen-drv-goldens.sh and evaluator/tests/derivations.rs so both hash the
# same trees; nothing odd (executables, symlinks) is committed.
set -eu
D=$1
mkdir -p "$D/tree/bin" "$D/tree/sub/dir" "$D/tree/empty"
printf 'hello\n' > "$D/tree/a"
printf '#!/bin/sh\necho run\n' > "$D/tree/bin/run"
chmod 755 "$D/tree/bin/run"
ln -s a "$D/tree/link"
ln -s ../a "$D/tree/sub/up"
printf 'deep\n' > "$D/tree/sub/dir/deep"
printf 'single file\n' > "$D/single.txt"
printf '#!/bin/sh\nexit 0\n' > "$D/exec.sh"
chmod 755 "$D/exec.sh"
