#!/usr/bin/env bash
# The whole test suite, on a fresh machine or a warm one: formatting, lints,
# every Rust test (unit, property, crash, real-client), and the interop
# scripts with Python clients and kcat. Installs what it needs by itself.
set -euo pipefail
cd "$(dirname "$0")/.."

# Reuse one target dir outside the clone, so a fresh clone on a warm machine
# rebuilds only Ferry's own crates (shared/DEPENDENCIES.md §7).
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/ferry-target}"
if [ "${CI:-}" = "true" ]; then
  export CARGO_INCREMENTAL=0
fi
log="$(mktemp)"
trap 'rm -f "$log"' EXIT

# System packages a fresh Debian/Ubuntu machine lacks: kcat (a consumer-group
# member the group tests kill with SIGKILL, and an interop client), and
# libssl-dev + pkg-config, which rdkafka's `ssl` feature (SCRAM) builds
# against. Installs only the missing ones.
missing=()
command -v kcat >/dev/null || missing+=(kcat)
command -v pkg-config >/dev/null || missing+=(pkg-config)
if ! pkg-config --exists openssl 2>/dev/null && ! dpkg -s libssl-dev >/dev/null 2>&1; then
  missing+=(libssl-dev)
fi
if [ "${#missing[@]}" -gt 0 ]; then
  echo "== installing ${missing[*]}"
  sudo=""
  if [ "$(id -u)" -ne 0 ] && command -v sudo >/dev/null; then sudo="sudo"; fi
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq "${missing[@]}"
fi

echo "== cargo fmt --check"
cargo fmt --all -- --check
echo "== cargo clippy"
cargo clippy --workspace --all-targets --locked -- -D warnings
echo "== cargo test"
cargo test --workspace --locked 2>&1 | tee "$log"
echo "== interop (confluent-kafka, kafka-python, kcat)"
bash interop/run.sh 2>&1 | tee -a "$log"

passed=$(grep -hoE '(test result: ok\. |interop: )[0-9]+ passed' "$log" | grep -oE '[0-9]+' | awk '{s += $1} END {print s + 0}')
echo "ferry: ${passed} passed, 0 failed"
