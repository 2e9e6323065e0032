#!/usr/bin/env bash
# Two broker builds, one after the other, through the same latency bench,
# each with the broker's context switches and CPU per message (and, with
# STRACE=1, its syscalls per message in a separate run); then the raw
# fsync + loopback probe (scripts/latency-probe.sh) in the same sitting.
#
#   scripts/latency-ab.sh BENCH_BINARY OLD_FERRY NEW_FERRY [bench args...]
#   e.g. scripts/latency-ab.sh $T/release/deps/kafka-* $T/ferry-base $T/release/ferry \
#        --latency-only --rate 1000 --seconds 10 --linger-ms 0
#
# The per-message counts cover the first 8 s of the broker's life after
# the bench reports its pid: the first latency case of the bench.
set -euo pipefail
cd "$(dirname "$0")/.."
bench=$1 old=$2 new=$3
shift 3
rate=1000
for ((i = 1; i <= $#; i++)); do
  if [ "${!i}" = "--rate" ]; then j=$((i + 1)); rate=${!j}; fi
done
out=$(mktemp -d)
for which in old new; do
  bin=$old; [ $which = new ] && bin=$new
  (cd crates/ferry && FERRY_BIN=$bin "$bench" "$@" >"$out/$which.out" 2>"$out/$which.err") &
  job=$!
  pid=""
  for _ in $(seq 100); do
    pid=$(grep -o 'ferry pid [0-9]*' "$out/$which.err" 2>/dev/null | awk '{print $3}') || true
    [ -n "$pid" ] && break
    sleep 0.2
  done
  sleep 2
  [ -n "$pid" ] && per=$(scripts/proc-per-message.sh "$pid" 8 "$rate" 2>/dev/null || true)
  wait $job || true
  echo "== $which ($bin), load $(cut -d' ' -f1-3 /proc/loadavg)"
  grep -v "^\[ferry\]" "$out/$which.out" | tail -n +2
  echo "$per"
done
scripts/latency-probe.sh --rate "$rate" --seconds 10
rm -rf "$out"
