#!/usr/bin/env bash
# The figures of issue #21, each with its reference from the same run
# (docs/benchmarks.md, "## Issue #21"):
#   1. topic after topic: 10 topics, rate and broker CPU per MiB, against the
#      raw segment writer (scripts/bench-topics.sh);
#   2. MQTT QoS 1 through one rumqttc connection (1 KiB, default in-flight),
#      Ferry against Mosquitto, clean and persistent subscriber, broker CPU
#      per message (scripts/bench-mqtt.sh --only rumqttc);
#   3. end-to-end p99 at 1,000 msg/s: Kafka (librdkafka, linger.ms 0, fsync
#      before visibility), AMQP (lapin, persistent, confirms; RabbitMQ if
#      installed), MQTT QoS 1 (against Mosquitto).
# PARTS=13 scripts/bench-issue21.sh runs parts 1 and 3 only.
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/ferry-target}"
PARTS="${PARTS:-123}"
if [[ $PARTS == *1* ]]; then
  echo "== 1. topic after topic (goal: t10 >= 90% of t1)"
  TOPICS=10 scripts/bench-topics.sh
fi
if [[ $PARTS == *2* ]]; then
  echo "== 2. MQTT QoS 1, one rumqttc publisher (goal: >= 2x Mosquitto)"
  scripts/bench-mqtt.sh --messages 200000 --only rumqttc
fi
if [[ $PARTS == *3* ]]; then
  echo "== 3. end-to-end p99 at 1,000 msg/s (goals: Kafka, AMQP <= 1 ms; MQTT QoS 1 <= 0.25 ms)"
  cargo bench -q -p ferry --bench kafka -- --latency-only --rate 1000 --seconds 10 --linger-ms 0 2>/dev/null |
    grep -E "p99|acks"
  cargo bench -q -p ferry --bench amqp -- --messages 20000 --rate 1000 --seconds 10 2>/dev/null | grep -E "p99|ferry|rabbit"
  scripts/bench-mqtt.sh --rate 1000 --seconds 10 --only latency-qos1 2>/dev/null
fi
