#!/usr/bin/env bash
# Where an MQTT QoS 1 message's time goes inside each broker at 1,000
# msgs/s: runs the mqtt bench's latency-qos1 case (Ferry, then Mosquitto)
# under perf (syscall tracepoints of both brokers), then
# scripts/mqtt-stages.py prints, per broker, the time from reading a
# PUBLISH to sending its PUBACK and to sending the delivery, and which went
# first. Needs root (perf).
#
#   scripts/mqtt-stages.sh FERRY_BIN OUTDIR     (PRIO="" for no chrt)
set -euo pipefail
cd "$(dirname "$0")/.."
bin=$1 out=$2
mkdir -p "$out"
T="${CARGO_TARGET_DIR:-$HOME/.cache/ferry-target}"
M=$(ls -t "$T"/release/deps/mqtt-* | grep -v '\.d$' | head -1)
prio=${PRIO-chrt -f 10}
ev=""
for s in recvfrom sendto read write writev recvmsg sendmsg; do
  ev="$ev,syscalls:sys_enter_$s,syscalls:sys_exit_$s"
done
(cd crates/ferry && FERRY_BIN=$bin $prio "$M" --rate 1000 --seconds 10 --only latency-qos1 \
  >"$out/bench.out" 2>"$out/bench.err") &
job=$!
ferry="" mosq=""
while kill -0 $job 2>/dev/null && { [ -z "$ferry" ] || [ -z "$mosq" ]; }; do
  for c in $(pgrep -P "$(pgrep -n -f "$(basename "$M")" || echo 1)" || true); do
    case "$(cat /proc/$c/comm 2>/dev/null)" in
      ferry) ferry=$c ;;
      mosquitto) mosq=$c ;;
    esac
  done
  sleep 0.2
done
perf record -q -o "$out/perf.data" -e "${ev#,}" -a -- sh -c "while kill -0 $job 2>/dev/null; do sleep 0.5; done" \
  >/dev/null 2>&1 || true
wait $job || true
cat "$out/bench.out"
perf script -i "$out/perf.data" -F comm,pid,tid,cpu,time,event,trace 2>/dev/null >"$out/perf.txt"
rm -f "$out/perf.data"
echo "== ferry (pid $ferry)"
python3 scripts/mqtt-stages.py "$out/perf.txt" "$ferry"
echo "== mosquitto (pid $mosq)"
python3 scripts/mqtt-stages.py "$out/perf.txt" "$mosq"
