#!/usr/bin/env bash
# MQTT benchmark: Ferry (release) against Debian's Mosquitto (persistence on)
# on loopback, in the same run: fan-in / fan-out throughput and end-to-end
# latency at QoS 0 and 1 (crates/ferry/benches/mqtt.rs; docs/benchmarks.md,
# "## MQTT"). Installs mosquitto if it is missing. Arguments go to the bench:
#   scripts/bench-mqtt.sh --messages 400000 --rate 5000 --seconds 3 --only qos1
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/ferry-target}"

if [ -z "${MOSQUITTO:-}" ] && ! [ -x /usr/sbin/mosquitto ]; then
  echo "== installing mosquitto" >&2
  sudo=""
  if [ "$(id -u)" -ne 0 ] && command -v sudo >/dev/null; then sudo="sudo"; fi
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq mosquitto
fi
# The package may start a system instance on 1883; the bench uses its own on a free port.
cargo bench -p ferry --bench mqtt -- "$@"
