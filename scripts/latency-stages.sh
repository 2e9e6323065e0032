#!/usr/bin/env bash
# Where a record's time goes on Ferry's fsynced Kafka path, stage by stage:
# runs the kafka latency bench against FERRY_BIN and records the broker's
# and the bench's syscalls (perf tracepoints: recv/send, the append's
# pwritev, fdatasync) and scheduler wake-ups over 8 s of the acks=1 case and
# 8 s of the acks=all case; then scripts/latency-stages.py matches them per
# record (receive -> append -> flusher wake-up -> fdatasync -> fetch
# response) and prints each stage's distribution. Needs root (perf).
#
#   scripts/latency-stages.sh FERRY_BIN OUTDIR     (PRIO="" for no chrt)
#
# By default the bench (and so the broker it starts) runs under
# `chrt -f 10`, as the figures in docs/benchmarks.md ("Issue #21 part 3:
# the fsynced path") were taken while other work kept both cores busy.
set -euo pipefail
cd "$(dirname "$0")/.."
bin=$1 out=$2
mkdir -p "$out"
T="${CARGO_TARGET_DIR:-$HOME/.cache/ferry-target}"
K=$(ls -t "$T"/release/deps/kafka-* | grep -v '\.d$' | head -1)
prio=${PRIO-chrt -f 10}
(cd crates/ferry && FERRY_BIN=$bin $prio "$K" --latency-only --rate 1000 --seconds 10 --linger-ms 0 \
  >"$out/bench.out" 2>"$out/bench.err") &
job=$!
pid=""
for _ in $(seq 100); do
  pid=$(grep -o 'ferry pid [0-9]*' "$out/bench.err" 2>/dev/null | awk '{print $3}') || true
  [ -n "$pid" ] && break
  sleep 0.2
done
ev=""
for s in recvmsg sendmsg recvfrom sendto writev pwritev fdatasync fsync rename; do
  ev="$ev,syscalls:sys_enter_$s,syscalls:sys_exit_$s"
done
ev="${ev#,},sched:sched_wakeup,sched:sched_switch"
sleep 3
perf record -q -o "$out/a.data" -e "$ev" -a -- sleep 8 >/dev/null 2>&1 || true
until grep -q "^acks=1 " "$out/bench.err" 2>/dev/null; do sleep 0.2; done
sleep 3
perf record -q -o "$out/b.data" -e "$ev" -a -- sleep 8 >/dev/null 2>&1 || true
wait $job || true
echo "load $(cut -d' ' -f1-3 /proc/loadavg)"
grep -A4 "rate samples" "$out/bench.out"
for w in a b; do
  perf script -i "$out/$w.data" -F comm,pid,tid,cpu,time,event,trace 2>/dev/null >"$out/$w.txt"
  rm -f "$out/$w.data"
done
bench=$(grep -m1 '^ *rdk:broker' "$out/a.txt" | awk '{print $2}' | cut -d/ -f1)
for w in a b; do
  echo "== $([ $w = a ] && echo acks=1 || echo acks=all) window"
  python3 scripts/latency-stages.py "$out/$w.txt" "$pid" "$bench"
done
