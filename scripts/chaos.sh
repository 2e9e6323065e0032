#!/usr/bin/env bash
# Long fault runs (issue #16, docs/reliability.md): three `ferry serve`
# voters behind the fault proxy, faults from a seeded schedule, Kafka
# workloads writing a history, the checker over it.
#
#   scripts/chaos.sh --duration 30m --seed 7 [--workload idempotent|transactions|amqp|single|all] [--dir DIR]
#                    [--ports LOW-HIGH]
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
# minutes per workload). The test binary and the `ferry` binary are copied
# into DIR/bin first and run from there, so rebuilding the workspace during
# a long run changes nothing in it. --ports keeps the nodes' ports in
# LOW-HIGH (FERRY_TEST_PORTS): give runs side by side ranges of their own,
# away from other test suites, so that no one takes a killed node's port.
# Histories are written as they are recorded (a run its watchdog ends keeps
# its history, whose last line names the client calls still blocked), node
# logs at the end, in DIR (default
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
ports=""
while [[ $# -gt 0 ]]; do
    case "$1" in
        --duration) duration="$2"; shift 2 ;;
        --seed) seed="$2"; shift 2 ;;
        --workload) workload="$2"; shift 2 ;;
        --dir) dir="$2"; shift 2 ;;
        --ports) ports="$2"; shift 2 ;;
        -h|--help) sed -n '2,30p' "$0"; exit 0 ;;
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
[[ -z "$ports" || "$ports" =~ ^[0-9]+-[0-9]+$ ]] || { echo "--ports is LOW-HIGH" >&2; exit 2; }

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
# Build first, outside the time bound of the run itself, and keep copies of
# the binaries the run uses.
test_bin=$(cargo test -p ferry --test it --no-run 2>&1 | tee /dev/stderr \
    | sed -n 's/.*Executable tests\/it\/main.rs (\(.*\))$/\1/p' | tail -1)
[[ -n "$test_bin" ]] || { echo "no test binary found in cargo's output" >&2; exit 1; }
[[ "$test_bin" = /* ]] || test_bin="$root/$test_bin"
ferry_bin="$(dirname "$(dirname "$test_bin")")/ferry"
mkdir -p "$dir/bin"
cp "$test_bin" "$dir/bin/it"
cp "$ferry_bin" "$dir/bin/ferry"
git -C "$root" describe --always --dirty > "$dir/bin/commit" 2>/dev/null || true
limit=$(( (2 * secs + 900) * 4 ))
FERRY_CHAOS_SECS="$secs" FERRY_CHAOS_SEED="$seed" FERRY_CHAOS_DIR="$dir" FERRY_BIN="$dir/bin/ferry" \
    FERRY_TEST_PORTS="$ports" \
    timeout --kill-after=30 "$limit" \
    "$dir/bin/it" "$filter" --include-ignored --nocapture --test-threads=1 \
    2>&1 | grep --line-buffered -v -E '^[0-9]{4}-[0-9]{2}-[0-9]{2}T' | tee "$dir/chaos-$seed-$workload.out"
