#!/usr/bin/env bash
# `ferry bench` against a fresh release broker on 127.0.0.1, with the
# loopback TCP reference measured in the same run (docs/benchmarks.md).
# RECORDS (default 500000) records of SIZE (default 1024) bytes per case.
# RDKAFKA=1 also runs the librdkafka bench (crates/ferry/benches/kafka.rs,
# same record count, 1 KiB records) right after, and prints ferry bench's
# produce and consume throughput as a ratio of librdkafka's.
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/ferry-target}"
records="${RECORDS:-500000}"
size="${SIZE:-1024}"

cargo build -q --release --locked -p ferry --bin ferry
ferry="$CARGO_TARGET_DIR/release/ferry"
work="$(mktemp -d -t ferry-bench.XXXXXX)"
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
port="$(free_port)"
FERRY_LOG=warn "$ferry" serve --data-dir "$work/data" --kafka-listen "127.0.0.1:$port" --http-listen 127.0.0.1:0 &
broker=$!
trap 'kill -TERM $broker 2>/dev/null || true; wait $broker 2>/dev/null || true; rm -rf "$work"' EXIT
for _ in $(seq 100); do
  if (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then break; fi
  sleep 0.1
done
export FERRY_BROKERS="127.0.0.1:$port"

results="$work/results.jsonl"
run() { # name, then ferry bench arguments
  local name="$1"; shift
  sync
  "$ferry" bench "$@" --json | python3 -c 'import json,sys; d=json.load(sys.stdin); d["case"]=sys.argv[1]; print(json.dumps(d))' "$name" >>"$results"
}
run "loopback TCP" loopback --bytes "$((records * size))"
run "produce p1 acks=1" produce --topic p1a1 --partitions 1 --acks 1 --records "$records" --size "$size"
run "produce p6 acks=1" produce --topic p6a1 --partitions 6 --acks 1 --records "$records" --size "$size"
run "produce p1 acks=all" produce --topic p1aall --partitions 1 --acks -1 --records "$records" --size "$size"
run "produce p6 acks=all" produce --topic p6aall --partitions 6 --acks -1 --records "$records" --size "$size"
run "produce p6 acks=all c4" produce --topic p6c4 --partitions 6 --acks -1 --concurrency 4 --records "$records" --size "$size"
run "consume p6" consume --topic p6a1
run "e2e p6 acks=1 50k/s" e2e --topic e2e --partitions 6 --acks 1 --rate 50000 --records 250000 --size "$size"

kafka_json="$work/rdkafka.json"
if [ "${RDKAFKA:-0}" = "1" ]; then
  kill -TERM $broker; wait $broker 2>/dev/null || true
  cargo bench -q --locked -p ferry --bench kafka -- --records "$records" --json >"$kafka_json" 2>/dev/null
fi

python3 - "$results" "$size" "$kafka_json" <<'EOF'
import json, os, sys
rows = [json.loads(l) for l in open(sys.argv[1])]
size = int(sys.argv[2])
MIB = 1024 * 1024
kafka = {}
if os.path.exists(sys.argv[3]) and os.path.getsize(sys.argv[3]) > 0:
    k = json.load(open(sys.argv[3]))
    kafka = {r["case"]: r["mib_per_s"] for r in k["produce"]}
    if "consume" in k:
        kafka["consume p6"] = k["consume"]["mib_per_s"]
loop = next(r for r in rows if r["mode"] == "loopback")
ref = loop["mb_per_sec"] * 1e6 / MIB
print(f"loopback TCP reference: {ref:.0f} MiB/s. MiB/s = records x {size} B value bytes per second")
print(f"{'case':<24}{'records':>9}{'secs':>7}{'MiB/s':>8}{'rec/s':>10}{'/loop':>7}{'/rdkafka':>9}{'p50 ms':>8}{'p99':>7}{'p999':>7}{'max':>7}")
for r in rows:
    if r["mode"] == "loopback":
        continue
    l = r["latency_ms"]
    mib = r["records"] * size / r["seconds"] / MIB
    rk = kafka.get(r["case"])
    rk = f"{mib / rk:>9.2f}" if rk else f"{'-':>9}"
    print(f"{r['case']:<24}{r['records']:>9}{r['seconds']:>7.2f}{mib:>8.0f}{r['records_per_sec']:>10.0f}"
          f"{mib / ref:>7.2f}{rk}{l['p50']:>8.2f}{l['p99']:>7.2f}{l['p999']:>7.2f}{l['max']:>7.2f}")
if kafka:
    print("librdkafka (same run):", ", ".join(f"{c} {v:.0f} MiB/s" for c, v in kafka.items()))
EOF
