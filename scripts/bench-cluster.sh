#!/usr/bin/env bash
# Cluster benchmarks (issue #14): three release `ferry serve` nodes on
# 127.0.0.1, voters of one controller quorum. Bounded (LIMIT seconds in all,
# default 1800, and every wait has its own bound); stops every node it
# started and removes its data when done.
#  (a) controller failover: ROUNDS times (default 20): find the controller
#      leader, kill -9 it, time until a CreateTopics through a surviving
#      node succeeds (`ferry topic create`, retried), restart the killed
#      node and wait until it serves again. Prints p50 and max.
#  (b) metadata scale: on a fresh cluster, one CreateTopics with PARTITIONS
#      partitions (default 10000, RF 1): time to create, time of a Metadata
#      request for all topics (`ferry cluster info`, best and median of 5),
#      and each node's RSS before and after. The RSS delta divided by the
#      partition count bounds the image's memory per partition from above:
#      it also holds the ~1/3 of the partitions each node hosts (their
#      open logs and indexes).
#   scripts/bench-cluster.sh
#   PART=a ROUNDS=5 scripts/bench-cluster.sh
#   PART=b PARTITIONS=2000 scripts/bench-cluster.sh
set -euo pipefail
cd "$(dirname "$0")/.."
part="${PART:-ab}"
rounds="${ROUNDS:-20}"
partitions="${PARTITIONS:-10000}"
limit="${LIMIT:-1800}"

bench=bench-cluster
# shellcheck source=scripts/bench-lib.sh
source scripts/bench-lib.sh

# A fresh three-node cluster in $work/$1: ports, quorum, data directories.
setup() {
  local dir="$work/$1" q="" n
  mkdir -p "$dir"
  # Default settings (the issue's goal is stated for them); CLUSTER_TOML
  # adds a [cluster] section's lines, e.g. 'session_timeout_ms = 3000'.
  printf '[cluster]\n%b\n' "${CLUSTER_TOML:-}" > "$dir/ferry.toml"
  for n in 1 2 3; do
    kafka[$n]=$(free_port); http[$n]=$(free_port); cport[$n]=$(free_port)
    q="$q${q:+,}$n@127.0.0.1:${cport[$n]}"
  done
  quorum="$q"
  cluster_dir="$dir"
}

start_node() { # node id
  local n="$1"
  FERRY_LOG="${FERRY_LOG:-warn}" "$ferry" serve --config "$cluster_dir/ferry.toml" --node-id "$n" \
    --data-dir "$cluster_dir/n$n" --controller-quorum "$quorum" \
    --cluster-listen "127.0.0.1:${cport[$n]}" --kafka-listen "127.0.0.1:${kafka[$n]}" \
    --http-listen "127.0.0.1:${http[$n]}" --amqp-listen "127.0.0.1:$(free_port)" \
    --mqtt-listen "127.0.0.1:$(free_port)" --stomp-listen off --redis-listen off >> "$cluster_dir/n$n.log" 2>&1 &
  pid[$n]=$!
}

wait_ready() { # node id: /v1/health 200 within 120 s
  local n="$1" i
  for i in $(seq 600); do
    if curl -sf -o /dev/null --max-time 2 "http://127.0.0.1:${http[$n]}/v1/health"; then return 0; fi
    if ! kill -0 "${pid[$n]}" 2>/dev/null; then echo "node $n exited; its log:" >&2; tail -20 "$cluster_dir/n$n.log" >&2; exit 1; fi
    sleep 0.2
  done
  echo "node $n not ready in 120 s" >&2; tail -20 "$cluster_dir/n$n.log" >&2; exit 1
}

start_cluster() {
  local n
  for n in 1 2 3; do start_node "$n"; done
  for n in 1 2 3; do wait_ready "$n"; done
}

leader_via() { # node id -> the controller leader it knows of, or nothing
  "$ferry" cluster info --format json --brokers "127.0.0.1:${kafka[$1]}" --timeout-ms 2000 2>/dev/null |
    python3 -c 'import json,sys; c=json.load(sys.stdin)["controller_id"]; print(c if c >= 0 else "")' 2>/dev/null || true
}

wait_leader() { # node id to ask, a node id that must not be the answer -> leader
  local n="$1" not="${2:-}" l i
  for i in $(seq 300); do
    l=$(leader_via "$n")
    if [ -n "$l" ] && [ "$l" != "$not" ]; then echo "$l"; return 0; fi
    sleep 0.2
  done
  echo "no controller leader known to node $n in 60 s" >&2; exit 1
}

create_topic() { # node id, topic, partitions -> 0 once created (or found created)
  local out
  out=$("$ferry" topic create "$2" --partitions "$3" --replication-factor 1 \
    --brokers "127.0.0.1:${kafka[$1]}" --timeout-ms "${4:-5000}" 2>&1) && return 0
  case "$out" in *TOPIC_ALREADY_EXISTS*) return 0 ;; esac
  return 1
}

rss_kb() { awk '/^VmRSS:/ {print $2}' "/proc/$1/status"; }

percentiles() { # numbers on stdin -> "p50 X ms, max Y ms (n N)"
  python3 -c 'import sys
v = sorted(int(x) for x in sys.stdin.read().split())
print(f"p50 {v[(len(v) - 1) // 2]} ms, max {v[-1]} ms (n {len(v)})")'
}

if [[ "$part" == *a* ]]; then
  setup failover
  start_cluster
  times="$work/failover.txt"
  : > "$times"
  for round in $(seq 1 "$rounds"); do
    leader=$(wait_leader 1)
    survivor=1; [ "$leader" = 1 ] && survivor=2
    t0=$(now_ms)
    kill -9 "${pid[$leader]}"; wait "${pid[$leader]}" 2>/dev/null || true; unset "pid[$leader]"
    created=0
    for i in $(seq 120); do
      if create_topic "$survivor" "failover-$round" 1; then created=1; break; fi
      sleep 0.1
    done
    t1=$(now_ms)
    [ "$created" = 1 ] || { echo "round $round: no CreateTopics through node $survivor" >&2; exit 1; }
    echo $((t1 - t0)) >> "$times"
    echo "round $round: killed leader $leader, CreateTopics through node $survivor after $((t1 - t0)) ms" >&2
    start_node "$leader"
    wait_ready "$leader"
  done
  failover="$(percentiles < "$times")"
  stop_all
fi

if [[ "$part" == *b* ]]; then
  setup scale
  start_cluster
  wait_leader 1 > /dev/null
  sleep 2
  declare -A before=() after=()
  for n in 1 2 3; do before[$n]=$(rss_kb "${pid[$n]}"); done
  t0=$(now_ms)
  create_topic 1 scale "$partitions" 600000 || { echo "CreateTopics with $partitions partitions failed" >&2; exit 1; }
  create_ms=$(( $(now_ms) - t0 ))
  md="$work/metadata.txt"
  : > "$md"
  for i in 1 2 3 4 5; do
    t0=$(now_ms)
    "$ferry" cluster info --format json --brokers "127.0.0.1:${kafka[2]}" --timeout-ms 60000 > /dev/null
    echo $(( $(now_ms) - t0 )) >> "$md"
  done
  metadata="$(sort -n "$md" | head -1) ms best, $(sort -n "$md" | sed -n 3p) ms median (5 runs, all topics, via node 2)"
  sleep 2
  for n in 1 2 3; do after[$n]=$(rss_kb "${pid[$n]}"); done
  stop_all
fi

echo
echo "| measure | result |"
echo "|---|---|"
if [[ "$part" == *a* ]]; then
  echo "| controller failover: kill -9 of the leader to the next CreateTopics through a survivor | $failover |"
fi
if [[ "$part" == *b* ]]; then
  echo "| CreateTopics, $partitions partitions, RF 1, 3 nodes | $create_ms ms |"
  echo "| Metadata of all topics | $metadata |"
  for n in 1 2 3; do
    d=$(( after[$n] - before[$n] ))
    echo "| node $n RSS before / after / per partition | $(( before[$n] / 1024 )) MB / $(( after[$n] / 1024 )) MB / $(( d * 1024 / partitions )) B |"
  done
fi
