#!/usr/bin/env bash
# Quorum queues on a three-node cluster (issue #17): publish with confirms
# (quorum through its leader, quorum forwarded by another node, classic as
# the reference) and the consumer gap across leader kills.
# Usage: scripts/bench-amqp-cluster.sh [messages] [kills]
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
venv="${FERRY_VENV:-$root/.venv}"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/ferry-target}"
if [[ ! -x "$venv/bin/python" ]]; then
    python3 -m venv "$venv"
fi
"$venv/bin/pip" install -q --disable-pip-version-check -r "$root/interop/requirements.txt"
(cd "$root" && cargo build -q -p ferry --bin ferry)
export FERRY_BIN="$CARGO_TARGET_DIR/debug/ferry"
exec "$venv/bin/python" "$root/scripts/bench-amqp-cluster.py" "$@"
