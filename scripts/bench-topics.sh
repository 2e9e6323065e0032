#!/usr/bin/env bash
# Topic after topic (issue #21, part 1). One broker process; for each step
# t = 1..TOPICS: first the raw reference (scripts/raw-segment-writer.py: the
# same bytes appended to a plain segment file while another thread
# fdatasyncs it, as Ferry's flusher does), then RECORDS records of 1 KiB
# produced into topic t<t> (acks=1, `ferry bench produce`, release build).
# Both keep their files, so both grow the page cache alike. Per step it
# prints the topic's MB/s and its share of topic 1's, the broker's user and
# system CPU per MiB, the raw writer's MB/s and system CPU per MiB, and the
# page cache; at the end the goal figure: the last topic's rate against the
# first's (goal: >= 90%), with the raw writer's same ratio.
#   scripts/bench-topics.sh                       # 10 topics of 500,000 records
#   TOPICS=6 RECORDS=1000000 scripts/bench-topics.sh
#   RAW=0 scripts/bench-topics.sh                 # topics only
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/ferry-target}"
cargo build -q --release -p ferry --bin ferry
F="$CARGO_TARGET_DIR/release/ferry"
TOPICS="${TOPICS:-10}"
RECORDS="${RECORDS:-500000}"
D=$(mktemp -d "$CARGO_TARGET_DIR/bench-topics.XXXX")
trap 'if [ -n "$PID" ]; then kill "$PID" 2>/dev/null; wait "$PID" 2>/dev/null; fi; rm -rf "$D"' EXIT
PID=
mkdir -p "$D/raw"
cache() { awk '/^Cached:/ {printf "%.1f GB", $2/1048576}' /proc/meminfo; }
port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
K=$(port)
"$F" serve --data-dir "$D/data" --kafka-listen "127.0.0.1:$K" --amqp-listen "127.0.0.1:$(port)" \
  --mqtt-listen "127.0.0.1:$(port)" --http-listen "127.0.0.1:$(port)" --stomp-listen off --redis-listen off \
  > "$D/serve.log" 2>&1 &
PID=$!
for _ in $(seq 50); do (exec 3<>"/dev/tcp/127.0.0.1/$K") 2>/dev/null && break; sleep 0.1; done
tick=$(getconf CLK_TCK)
# Payload MiB per topic (what the raw writer writes too).
MIB=$(( RECORDS * 1024 / 1048576 ))
first=; raw_first=; last=; raw_last=
printf "%-6s %9s %7s %15s %17s | %9s %15s | %s\n" step "topic MB/s" "of t1" "broker user/MiB" "broker system/MiB" "raw MB/s" "raw system/MiB" "page cache"
for t in $(seq 1 "$TOPICS"); do
  raw_rate=-; raw_sys=-
  if [ "${RAW:-1}" = 1 ]; then
    mkdir -p "$D/raw/$t"
    r=$(python3 scripts/raw-segment-writer.py "$D/raw/$t" "$MIB")
    raw_rate=$(echo "$r" | sed -E 's/raw: ([0-9.]+) MB\/s.*/\1/')
    raw_sys=$(echo "$r" | sed -E 's/.*system ([0-9.]+) ms\/MiB.*/\1/')
  fi
  read -r u0 s0 < <(awk '{print $14, $15}' /proc/$PID/stat)
  out=$("$F" bench produce --brokers "127.0.0.1:$K" --topic "t$t" --records "$RECORDS" --size 1024 --acks 1 2>&1 |
    grep -oE "[0-9.]+ MB/s" | head -1 | cut -d' ' -f1)
  read -r u1 s1 < <(awk '{print $14, $15}' /proc/$PID/stat)
  first=${first:-$out}; raw_first=${raw_first:-$raw_rate}; last=$out; raw_last=$raw_rate
  share=$(awk -v a="$out" -v b="$first" 'BEGIN {printf "%.0f%%", 100 * a / b}')
  per() { awk -v c="$1" -v m="$MIB" -v k="$tick" 'BEGIN {printf "%.2f ms", c * 1000 / k / m}'; }
  printf "%-6s %9s %7s %15s %17s | %9s %15s | %s\n" "t$t" "$out" "$share" "$(per $((u1 - u0)))" "$(per $((s1 - s0)))" \
    "$raw_rate" "$raw_sys ms" "$(cache)"
done
echo "topic t$TOPICS at $(awk -v a="$last" -v b="$first" 'BEGIN {printf "%.0f%%", 100 * a / b}') of t1 (goal >= 90%)" \
  "$( [ "${RAW:-1}" = 1 ] && awk -v a="$raw_last" -v b="$raw_first" 'BEGIN {printf "; raw writer: step %d at %.0f%% of step 1", '"$TOPICS"', 100 * a / b}')"
