#!/usr/bin/env bash
# Issue #21 part 3, the evidence for its goals (p99 <= 1 ms at 1,000 msg/s):
# interleaved rounds, each run of the Kafka bench (librdkafka, linger.ms 0:
# acks=1, acks=all, acks=1 without fsync) and of the AMQP bench (lapin,
# persistent, confirms; Ferry and RabbitMQ) paired with the raw probe of the
# same round (scripts/latency-probe.sh: two loopback hops plus one
# fdatasync, the machine's floor for a broker that fsyncs before delivery).
# Each round runs once at normal priority and once under `chrt -f 10`
# (bench, the brokers it starts, the probe), the order swapped every round.
#
#   FERRY_BIN=<release ferry> scripts/latency-rounds.sh [ROUNDS=4] [OUTDIR]
#
# BENCH_LOCK=<file>: each half-round (about 3 minutes) holds that lock
# exclusively (`flock -o`, so no broker or epmd started inside keeps it).
# Needs the release benches: `cargo build --release -p ferry --benches`.
# Raw outputs stay in OUTDIR; the table at the end gives per run p50 / p99
# (ms), "ok" when p99 <= 1 ms, else "over" and, in brackets, whether the
# same half-round's probe (fsync over zeros, run before and after the
# benches) was itself over 1 ms at p99 ("floor>1") or not ("floor<=1");
# for the no-fsync row, the no-fsync probe.
set -euo pipefail
cd "$(dirname "$0")/.."
rounds=${1:-4}
out=${2:-$(mktemp -d -t latency-rounds.XXXXXX)}
mkdir -p "$out"
T="${CARGO_TARGET_DIR:-$HOME/.cache/ferry-target}"
: "${FERRY_BIN:?FERRY_BIN: the ferry release binary to measure}"
bench() { ls -t "$T"/release/deps/"$1"-* | grep -v '\.d$' | head -1; }
K=$(bench kafka) A=$(bench amqp)

half() { # round, prio label: one half-round into $out/r<round>-<label>.txt
  local f="$out/r$1-$2.txt" prio=""
  [ "$2" = chrt ] && prio="chrt -f 10"
  {
    echo "== round $1 $2, $(date -u +%H:%M:%S), load $(cut -d' ' -f1-3 /proc/loadavg)"
    $prio scripts/latency-probe.sh --rate 1000 --seconds 10
    (cd crates/ferry && $prio "$K" --latency-only --rate 1000 --seconds 10 --linger-ms 0 2>/dev/null) |
      grep -E "^acks="
    (cd crates/ferry && $prio "$A" --messages 20000 --rate 1000 --seconds 10 2>/dev/null) |
      grep -E "^\| (ferry|rabbitmq) \|"
    $prio "$T/latency-probe" --fsync --zeroed --dir "$T/tmp" --rate 1000 --seconds 10
    echo "== end $(date -u +%H:%M:%S), load $(cut -d' ' -f1-3 /proc/loadavg)"
  } >"$f" 2>&1
  cat "$f"
}

for r in $(seq "$rounds"); do
  order="normal chrt"
  [ $((r % 2)) -eq 0 ] && order="chrt normal"
  for p in $order; do
    if [ -n "${BENCH_LOCK:-}" ]; then
      export -f half
      export out K A T FERRY_BIN
      flock -x -o "$BENCH_LOCK" bash -c "half $r $p"
    else
      half "$r" "$p"
    fi
  done
done

# The table: one line per half-round.
echo
echo "| round | prio | probe fsync zeroed p50 / p99 (before; after) | probe no-fsync | Kafka acks=1 | acks=all | acks=1 no-fsync | AMQP Ferry | RabbitMQ |"
echo "|---|---|---|---|---|---|---|---|---|"
for f in $(ls -v "$out"/r*-*.txt); do
  awk -v name="$(basename "$f" .txt)" '
    function verdict(p50, p99, fl) {
      return sprintf("%.2f / %.2f %s", p50, p99, p99 <= 1.0 ? "ok" : "over (" (fl > 1.0 ? "floor>1" : "floor<=1") ")")
    }
    /^probe fsync zeroed/ { z[++nz] = $8 " / " $10; if ($10 + 0 > floor) floor = $10 + 0 }
    /^probe no-fsync/ { nf = $7 " / " $9; nfloor = $9 + 0 }
    /^acks=/ { lab = $1; i = 2; if ($2 == "no-fsync") { lab = lab " no-fsync"; i = 3 }
               k50[lab] = $(i + 2); k99[lab] = $(i + 3) }
    /^\| (ferry|rabbitmq) \|/ { a50[$2] = $4; a99[$2] = $6 }
    END {
      split(name, n, "-"); sub("^r", "", n[1])
      printf "| %s | %s | %s; %s | %s | %s | %s | %s | %s | %s |\n", n[1], n[2], z[1], z[2], nf,
        verdict(k50["acks=1"], k99["acks=1"], floor), verdict(k50["acks=all"], k99["acks=all"], floor),
        verdict(k50["acks=1 no-fsync"], k99["acks=1 no-fsync"], nfloor),
        verdict(a50["ferry"], a99["ferry"], floor), verdict(a50["rabbitmq"], a99["rabbitmq"], floor)
    }' "$f"
done
echo "(raw outputs: $out)"
