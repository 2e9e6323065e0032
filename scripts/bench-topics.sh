#!/usr/bin/env bash
# Topic after topic (issue #21, part 1): produce 1,000,000 records of 1 KiB
# (acks=1, `ferry bench produce`) into topic t1, then t2, ... in one broker
# process, and print per topic the throughput, the broker's user and system
# CPU, free memory and page cache. With RAW=1 it first writes the same
# amount to plain files, one after another, as the raw reference.
#   scripts/bench-topics.sh            # 8 topics
#   TOPICS=10 RAW=1 scripts/bench-topics.sh
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/ferry-target}"
cargo build -q --release -p ferry --bin ferry
F="$CARGO_TARGET_DIR/release/ferry"
D=$(mktemp -d "$CARGO_TARGET_DIR/bench-topics.XXXX")
trap 'if [ -n "$PID" ]; then kill "$PID" 2>/dev/null; wait "$PID" 2>/dev/null; fi; rm -rf "$D"' EXIT
PID=
mem() { awk '/^MemFree:/ {f=$2} /^Cached:/ {c=$2} /^Dirty:/ {d=$2} END {printf "free %d MB, cached %d MB, dirty %d MB", f/1024, c/1024, d/1024}' /proc/meminfo; }
if [ "${RAW:-0}" = 1 ]; then
  for t in $(seq 1 "${TOPICS:-8}"); do
    s=$(date +%s%N)
    dd if=/dev/zero of="$D/raw$t" bs=1M count=1000 conv=fdatasync status=none
    e=$(date +%s%N)
    echo "raw file $t: $(( 1000 * 1000000000 / (e - s) )) MB/s | $(mem)"
  done
  rm -f "$D"/raw*
fi
"$F" serve --data-dir "$D/data" --kafka-listen 127.0.0.1:19092 --amqp-listen 127.0.0.1:15672 \
  --mqtt-listen 127.0.0.1:11883 --http-listen 127.0.0.1:19644 > "$D/serve.log" 2>&1 &
PID=$!
sleep 2
tick=$(getconf CLK_TCK)
for t in $(seq 1 "${TOPICS:-8}"); do
  read -r u0 s0 < <(awk '{print $14, $15}' /proc/$PID/stat)
  out=$("$F" bench produce --brokers 127.0.0.1:19092 --topic "t$t" --records 1000000 --size 1024 --acks 1 2>&1 |
    grep -oE "[0-9.]+ MB/s" | head -1)
  read -r u1 s1 < <(awk '{print $14, $15}' /proc/$PID/stat)
  echo "topic t$t: $out | broker user $(( (u1 - u0) * 1000 / tick )) ms, system $(( (s1 - s0) * 1000 / tick )) ms | $(mem)"
done
