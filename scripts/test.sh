#!/usr/bin/env bash
# The whole test suite, on a fresh machine or a warm one: formatting, lints,
# and every test. Installs what it needs by itself.
set -euo pipefail
cd "$(dirname "$0")/.."

# Reuse one target dir outside the clone, so a fresh clone on a warm machine
# rebuilds only Ferry's own crates (shared/DEPENDENCIES.md §7).
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/ferry-target}"
if [ "${CI:-}" = "true" ]; then
  export CARGO_INCREMENTAL=0
fi

echo "== cargo fmt --check"
cargo fmt --all -- --check
echo "== cargo clippy"
cargo clippy --workspace --all-targets --locked -- -D warnings
echo "== cargo test"
cargo test --workspace --locked
