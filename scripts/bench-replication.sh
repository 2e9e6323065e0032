#!/usr/bin/env bash
# Replication benchmarks (issue #15), release `ferry serve` processes on
# 127.0.0.1, default settings (every acknowledged write fsynced), in one run
# so the ratios share the machine's state. Bounded (LIMIT seconds in all,
# default 1800); stops every node it started and removes its data.
#  (1) produce acks=all, SIZE-byte values (1 KiB), 6 partitions, with
#      `ferry bench produce` (one task, batches of 500, 5 in flight):
#      RF 1 on one node against RF 3 over three nodes, ROUNDS times
#      alternating; records/s, MiB/s and broker CPU ms per MiB (utime +
#      stime of every broker process from /proc/<pid>/stat, summed over the
#      nodes, over the run) and the ratio RF3 / RF1 per round.
#  (2) end-to-end latency at RATE records/s (20,000), acks=all, 6
#      partitions, `ferry bench e2e` for E2E_SECS: p50, p99, max, RF 3
#      (on the last RF 3 cluster) then RF 1 (a fresh one-node cluster),
#      and RF 3 / RF 1 of each, with the load average after each run.
#      ROUNDS=0 runs only this.
#  With BASELINE=<another release ferry binary>, each round also runs (1)'s
#  RF 3 case with that binary (servers only; the client is always this
#  build's), and prints RF3 now / RF3 baseline: before/after in one run.
#   scripts/bench-replication.sh
#   RECORDS=200000 ROUNDS=2 scripts/bench-replication.sh
#   FERRY_BIN=/tmp/ferry-new BASELINE=/tmp/ferry-old scripts/bench-replication.sh
set -euo pipefail
cd "$(dirname "$0")/.."
records="${RECORDS:-300000}"
size="${SIZE:-1024}"
rounds="${ROUNDS:-3}"
rate="${RATE:-20000}"
e2e_secs="${E2E_SECS:-20}"
limit="${LIMIT:-1800}"

bench=bench-replication
# shellcheck source=scripts/bench-lib.sh
source scripts/bench-lib.sh
baseline="${BASELINE:-}"
server="$ferry"

# A fresh cluster of $2 nodes (1 or 3) in $work/$1, started and serving.
start_cluster() {
  local dir="$work/$1" count="$2" q="" n
  stop_all
  mkdir -p "$dir"
  printf '[cluster]\n' > "$dir/ferry.toml"
  for n in $(seq "$count"); do
    kafka[$n]=$(free_port); http[$n]=$(free_port); cport[$n]=$(free_port)
    q="$q${q:+,}$n@127.0.0.1:${cport[$n]}"
  done
  for n in $(seq "$count"); do
    FERRY_LOG="${FERRY_LOG:-warn}" "$server" serve --config "$dir/ferry.toml" --node-id "$n" \
      --data-dir "$dir/n$n" --controller-quorum "$q" \
      --cluster-listen "127.0.0.1:${cport[$n]}" --kafka-listen "127.0.0.1:${kafka[$n]}" \
      --http-listen "127.0.0.1:${http[$n]}" --amqp-listen "127.0.0.1:$(free_port)" \
      --mqtt-listen "127.0.0.1:$(free_port)" --stomp-listen off --redis-listen off >> "$dir/n$n.log" 2>&1 &
    pid[$n]=$!
  done
  for n in $(seq "$count"); do
    local i ok=0
    for i in $(seq 600); do
      if curl -sf -o /dev/null --max-time 2 "http://127.0.0.1:${http[$n]}/v1/health"; then ok=1; break; fi
      kill -0 "${pid[$n]}" 2>/dev/null || { echo "node $n exited:" >&2; tail -20 "$dir/n$n.log" >&2; exit 1; }
      sleep 0.2
    done
    [ "$ok" = 1 ] || { echo "node $n not ready in 120 s" >&2; exit 1; }
  done
  brokers=$(for n in $(seq "$count"); do printf '127.0.0.1:%s,' "${kafka[$n]}"; done)
  brokers="${brokers%,}"
}

# Topic $1 with 6 partitions and replication factor $2, retried while the
# cluster settles; then until every partition has a leader with a full ISR.
create_topic() {
  local i out
  for i in $(seq 100); do
    out=$("$ferry" topic create "$1" --partitions 6 --replication-factor "$2" --brokers "$brokers" \
      --timeout-ms 5000 2>&1) && break
    case "$out" in *TOPIC_ALREADY_EXISTS*) break ;; esac
    sleep 0.3
  done
  for i in $(seq 300); do
    if curl -sf "http://127.0.0.1:${http[1]}/v1/topics/$1" | python3 -c '
import json, sys
t = json.load(sys.stdin)
ok = len(t["partitions"]) == 6 and all(p["leader"] > 0 and len(p["isr"]) == int(sys.argv[1]) for p in t["partitions"])
sys.exit(0 if ok else 1)' "$2"; then return 0; fi
    sleep 0.2
  done
  echo "topic $1: no full ISR in 60 s" >&2; exit 1
}

# CPU ticks (utime + stime) of every running broker.
cpu_ticks() {
  local n t=0
  for n in "${!pid[@]}"; do
    t=$(( t + $(awk '{print $14 + $15}' "/proc/${pid[$n]}/stat") ))
  done
  echo "$t"
}
hz=$(getconf CLK_TCK)

# ferry bench produce into $1; prints "records_per_sec mib_per_sec cpu_ms_per_mib p99_ms".
produce() {
  local c0 c1 out
  c0=$(cpu_ticks)
  out=$("$ferry" bench produce -t "$1" -n "$records" -s "$size" --acks -1 --partitions 6 --json --brokers "$brokers")
  c1=$(cpu_ticks)
  python3 -c '
import json, sys
r = json.loads(sys.argv[1])
ticks, hz, size = int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
mib = r["records"] * size / 1048576
rps, p99 = r["records_per_sec"], r["latency_ms"]["p99"]
print(f"{rps:.0f} {rps * size / 1048576:.1f} {ticks * 1000 / hz / mib:.2f} {p99:.1f}")
' "$out" "$((c1 - c0))" "$hz" "$size"
}

results="$work/results.txt"
: > "$results"
for round in $(seq "$rounds"); do
  start_cluster "rf1-$round" 1
  create_topic rf1 1
  r1=$(produce rf1)
  rb="-"
  if [ -n "$baseline" ]; then
    server="$baseline"
    start_cluster "base-$round" 3
    create_topic rf3 3
    rb=$(produce rf3)
    server="$ferry"
    echo "$round $rb" >> "$work/baseline.txt"
  fi
  start_cluster "rf3-$round" 3
  create_topic rf3 3
  r3=$(produce rf3)
  echo "$round $r1 $r3 $(cut -d' ' -f1 /proc/loadavg)" >> "$results"
  echo "round $round: RF1 $r1 | RF3 $r3 | RF3 baseline $rb" >&2
done

# End-to-end latency: RF 3 (on the last RF 3 cluster, or a fresh one),
# then RF 1 on a fresh one-node cluster, same client and settings.
e2e_run() {
  "$ferry" bench e2e -t e2e --rate "$rate" --duration-secs "$e2e_secs" -s "$size" --acks -1 --partitions 6 \
    --json --brokers "$brokers"
}
[ "${#pid[@]}" -eq 3 ] || start_cluster e2e-rf3 3
create_topic e2e 3
e2e=$(e2e_run)
load3=$(cut -d' ' -f1 /proc/loadavg)
start_cluster e2e-rf1 1
create_topic e2e 1
e2e1=$(e2e_run)
load1=$(cut -d' ' -f1 /proc/loadavg)
e2eb='{}' loadb=-
if [ -n "$baseline" ]; then
  server="$baseline"
  start_cluster e2e-base 3
  create_topic e2e 3
  e2eb=$(e2e_run)
  loadb=$(cut -d' ' -f1 /proc/loadavg)
  server="$ferry"
fi
stop_all

echo
echo "produce acks=all, $records records of $size B, 6 partitions (one ferry bench produce task)"
echo "(broker cores: CPU ms/MiB x MiB/s, the cores the brokers kept busy; the client and other work had the rest)"
echo "round | RF1 rec/s | RF1 MiB/s | RF1 CPU ms/MiB | RF1 cores | RF1 p99 ms | RF3 rec/s | RF3 MiB/s | RF3 CPU ms/MiB | RF3 cores | RF3 p99 ms | RF3/RF1 | load"
python3 -c '
import sys
for line in open(sys.argv[1]):
    f = line.split()
    c1, c3 = float(f[2]) * float(f[3]) / 1000, float(f[6]) * float(f[7]) / 1000
    print(f"{f[0]} | {f[1]} | {f[2]} | {f[3]} | {c1:.2f} | {f[4]} | {f[5]} | {f[6]} | {f[7]} | {c3:.2f} | {f[8]} | {float(f[5]) / float(f[1]):.2f} | {f[9]}")
' "$results"
python3 -c '
import json, sys
rate = sys.argv[5]
runs = [("RF3", json.loads(sys.argv[1]), sys.argv[2]), ("RF1", json.loads(sys.argv[3]), sys.argv[4])]
for name, r, load in runs:
    l, rps = r["latency_ms"], r["records_per_sec"]
    p50, p99, mx, n = l["p50"], l["p99"], l["max"], l["samples"]
    print(f"e2e {name} acks=all at {rate} records/s: {rps:.0f} records/s, latency ms p50 {p50:.2f}, p99 {p99:.2f}, max {mx:.2f} ({n} samples), load {load}")
l3, l1 = runs[0][1]["latency_ms"], runs[1][1]["latency_ms"]
r50, r99 = l3["p50"] / l1["p50"], l3["p99"] / l1["p99"]
print(f"e2e RF3 / RF1: p50 {r50:.2f}, p99 {r99:.2f}")
base = json.loads(sys.argv[6])
if base:
    l = base["latency_ms"]
    b50, b99, bmax = l["p50"], l["p99"], l["max"]
    print(f"e2e RF3 baseline servers: latency ms p50 {b50:.2f}, p99 {b99:.2f}, max {bmax:.2f}, load {sys.argv[7]}")
' "$e2e" "$load3" "$e2e1" "$load1" "$rate" "$e2eb" "$loadb"
if [ -n "$baseline" ] && [ -s "$work/baseline.txt" ]; then
  echo
  echo "RF3 with this build against RF3 with $baseline (same run, same client)"
  echo "round | base rec/s | base CPU ms/MiB | base p99 ms | now rec/s | now CPU ms/MiB | now p99 ms | now/base throughput | now/base CPU per MiB"
  python3 -c '
import sys
now = {l.split()[0]: l.split() for l in open(sys.argv[1])}
for line in open(sys.argv[2]):
    b = line.split()
    n = now[b[0]]
    print(f"{b[0]} | {b[1]} | {b[3]} | {b[4]} | {n[5]} | {n[7]} | {n[8]} | {float(n[5]) / float(b[1]):.2f} | {float(n[7]) / float(b[3]):.2f}")
' "$results" "$work/baseline.txt"
fi
