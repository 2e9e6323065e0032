#!/usr/bin/env bash
# Kafka -> AMQP bridge latency against a Kafka consumer of the same records
# (scripts/bench-bridge.py; docs/benchmarks.md, "Kafka-fed AMQP queues").
# Builds the release binary; clients go into the interop venv.
#   scripts/bench-bridge.sh [--records N] [--rate R]
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/ferry-target}"
cargo build --release -p ferry >&2
if ! [ -x .venv/bin/python ]; then
  python3 -m venv .venv
fi
.venv/bin/pip install -q --disable-pip-version-check -r interop/requirements.txt >&2
.venv/bin/python scripts/bench-bridge.py "$CARGO_TARGET_DIR/release/ferry" "$@"
