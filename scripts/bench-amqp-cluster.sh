#!/usr/bin/env bash
# Quorum queues on three nodes (issue #17): publish with confirms into
# Ferry's and RabbitMQ's quorum queues (3 local nodes each; classic queues
# as references), broker CPU per MiB, and the consumer gap across Ferry
# queue-leader kills. Needs the Debian rabbitmq-server package (RABBITMQ=0
# skips it).
# Usage: scripts/bench-amqp-cluster.sh [messages] [kills] [window] [rounds]
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
venv="${FERRY_VENV:-$root/.venv}"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/ferry-target}"
if [[ ! -x "$venv/bin/python" ]]; then
    python3 -m venv "$venv"
fi
"$venv/bin/pip" install -q --disable-pip-version-check -r "$root/interop/requirements.txt"
if [[ -z "${FERRY_BIN:-}" ]]; then
    (cd "$root" && cargo build -q --release --locked -p ferry --bin ferry)
    export FERRY_BIN="$CARGO_TARGET_DIR/release/ferry"
fi
exec "$venv/bin/python" "$root/scripts/bench-amqp-cluster.py" "$@"
