#!/usr/bin/env bash
# The raw reference for end-to-end latency figures: two loopback hops with
# (and without) one fdatasync between them, at the benchmark's rate
# (scripts/latency-probe.rs); the fsync case twice: appending to a growing
# file, and overwriting zeros written before (as Ferry's logs do at low
# rates). Compiled here with rustc, std only.
#   scripts/latency-probe.sh [--rate 1000] [--seconds 10]
set -euo pipefail
cd "$(dirname "$0")/.."
T="${CARGO_TARGET_DIR:-$HOME/.cache/ferry-target}"
mkdir -p "$T/tmp"
if [ ! -x "$T/latency-probe" ] || [ scripts/latency-probe.rs -nt "$T/latency-probe" ]; then
  rustc -O --edition 2024 -o "$T/latency-probe" scripts/latency-probe.rs
fi
"$T/latency-probe" --fsync --dir "$T/tmp" "$@"
"$T/latency-probe" --fsync --zeroed --dir "$T/tmp" "$@"
"$T/latency-probe" --dir "$T/tmp" "$@"
