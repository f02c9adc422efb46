# Sourced by the store benchmarks: builds flaked-store-tool and sets TOOL to it (and REPO,
# CARGO_TARGET_DIR). PROFILE=release (default; the profile bench/build-graph.sh shares) or
# PROFILE=dev-opt: the dev profile with flaked-store at opt-level 3, quicker to build.
REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$REPO/target-store}
PROFILE=${PROFILE:-release}
if [ "$PROFILE" = release ]; then
  cargo build -q --manifest-path "$REPO/Cargo.toml" --release -p flaked-store --bin flaked-store-tool
  TOOL=$CARGO_TARGET_DIR/release/flaked-store-tool
else
  cargo build -q --manifest-path "$REPO/Cargo.toml" -p flaked-store --bin flaked-store-tool --config 'profile.dev.package.flaked-store.opt-level=3'
  TOOL=$CARGO_TARGET_DIR/debug/flaked-store-tool
fi
