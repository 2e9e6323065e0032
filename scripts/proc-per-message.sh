#!/usr/bin/env bash
# What one process spends per message while a latency benchmark runs
# against it: context switches (voluntary and not, summed over all its
# threads) and, with STRACE=1, system calls by name (strace -c -f).
#
#   scripts/proc-per-message.sh PID SECONDS RATE
#
# RATE is the messages per second the benchmark drives through the process
# (each message counted once; divide by more if it crosses the process
# more than once). strace slows every syscall down, so take latency
# figures from a run without it.
set -euo pipefail
pid=$1 secs=$2 rate=$3
ctx() {
  local v=0 n=0
  for s in /proc/"$pid"/task/*/status; do
    v=$((v + $(awk '/^voluntary_ctxt_switches/ {print $2}' "$s" 2>/dev/null || echo 0)))
    n=$((n + $(awk '/^nonvoluntary_ctxt_switches/ {print $2}' "$s" 2>/dev/null || echo 0)))
  done
  echo "$v $n"
}
cpu() { awk '{print $14 + $15}' /proc/"$pid"/stat; }
read -r v0 n0 < <(ctx)
c0=$(cpu)
if [ "${STRACE:-0}" = 1 ]; then
  out=$(mktemp)
  timeout -s INT "$secs" strace -c -f -p "$pid" -o "$out" 2>/dev/null || true
  read -r v1 n1 < <(ctx)
  c1=$(cpu)
  msgs=$((secs * rate))
  awk -v m="$msgs" 'NR > 2 && $NF != "total" && $4 ~ /^[0-9]+$/ {
      printf "  %-20s %8.2f per message\n", $NF, $4 / m }' "$out" | sort -k2 -nr | head -15
  rm -f "$out"
else
  sleep "$secs"
  read -r v1 n1 < <(ctx)
  c1=$(cpu)
fi
awk -v v=$((v1 - v0)) -v n=$((n1 - n0)) -v c=$((c1 - c0)) -v m=$((secs * rate)) -v t="$(getconf CLK_TCK)" 'BEGIN {
  printf "pid %s: %.2f voluntary + %.2f involuntary context switches per message, %.1f us CPU per message\n",
    "'"$pid"'", v / m, n / m, c / t * 1e6 / m }'
