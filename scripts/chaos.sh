#!/usr/bin/env bash
# Long fault runs (issue #16, docs/reliability.md): three `ferry serve`
# voters behind the fault proxy, faults from a seeded schedule, Kafka
# workloads writing a history, the checker over it.
#
#   scripts/chaos.sh --duration 30m --seed 7 [--workload idempotent|transactions|amqp|single|all] [--dir DIR]
#
# idempotent: acks=all idempotent producers and a group consumer, 3 voters;
# transactions: the same plus a consume-transform-produce worker;
# amqp: an AMQP publisher with confirms and a manual-ack consumer on a
#   quorum queue, on two different nodes of the 3 voters;
# single: AMQP and MQTT QoS 1/2 on one node killed and restarted;
# all: the four, one after the other.
#
# Each workload runs for --duration (s, m or h suffix) and stops by itself;
# the whole script is bounded by `timeout` (twice the duration plus 15
# minutes per workload). Histories and node logs are kept in DIR (default
# target/chaos): chaos-<seed>.jsonl, chaos-txn-<seed>.jsonl,
# chaos-amqp-quorum-<seed>.jsonl, chaos-{amqp,mqtt-qos1,mqtt-qos2}-<seed>.jsonl;
# check one again with `cargo run -p ferry-chaos --bin ferry-chaos-check -- FILE`
# (`--redelivered-only` for chaos-amqp-quorum, `--allow-duplicates` for
# chaos-amqp and chaos-mqtt-qos1).
set -euo pipefail

duration=30m
seed=1
workload=all
dir=""
while [[ $# -gt 0 ]]; do
    case "$1" in
        --duration) duration="$2"; shift 2 ;;
        --seed) seed="$2"; shift 2 ;;
        --workload) workload="$2"; shift 2 ;;
        --dir) dir="$2"; shift 2 ;;
        -h|--help) sed -n '2,22p' "$0"; exit 0 ;;
        *) echo "unknown argument: $1" >&2; exit 2 ;;
    esac
done

case "$duration" in
    *h) secs=$(( ${duration%h} * 3600 )) ;;
    *m) secs=$(( ${duration%m} * 60 )) ;;
    *s) secs=${duration%s} ;;
    *) secs=$duration ;;
esac
[[ "$secs" =~ ^[0-9]+$ && "$secs" -ge 30 ]] || { echo "--duration must be at least 30s" >&2; exit 2; }
[[ "$seed" =~ ^[0-9]+$ ]] || { echo "--seed must be a number" >&2; exit 2; }

root="$(cd "$(dirname "$0")/.." && pwd)"
dir="${dir:-$root/target/chaos}"
mkdir -p "$dir"

case "$workload" in
    idempotent) filter="chaos::kafka_under_faults_loses_nothing_acknowledged" ;;
    transactions) filter="chaos::kafka_transactions_under_faults_leave_nothing_hanging" ;;
    amqp) filter="chaos::amqp_quorum_queue_under_faults_loses_nothing_confirmed" ;;
    single) filter="chaos_single::" ;;
    all) filter="chaos" ;;
    *) echo "--workload is idempotent, transactions, amqp, single or all" >&2; exit 2 ;;
esac

cd "$root"
# Build first, outside the time bound of the run itself.
cargo test -p ferry --test it --no-run
limit=$(( (2 * secs + 900) * 4 ))
FERRY_CHAOS_SECS="$secs" FERRY_CHAOS_SEED="$seed" FERRY_CHAOS_DIR="$dir" \
    timeout --kill-after=30 "$limit" \
    cargo test -p ferry --test it "$filter" -- --include-ignored --nocapture --test-threads=1 \
    2>&1 | grep --line-buffered -v -E '^[0-9]{4}-[0-9]{2}-[0-9]{2}T' | tee "$dir/chaos-$seed-$workload.out"
