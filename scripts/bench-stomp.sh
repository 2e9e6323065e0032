#!/usr/bin/env bash
# STOMP benchmark: Ferry's STOMP front-end (release `ferry serve`) against
# Debian's ActiveMQ 5.17 (KahaDB as shipped, a STOMP connector on a free
# loopback port), in the same run (docs/benchmarks.md, "## STOMP against
# ActiveMQ 5.17"). One load client for both: `ferry bench stomp`
# (crates/ferry/src/cli/bench_stomp.rs, raw STOMP 1.2 frames on tokio).
#   send:    N persistent SIZE-byte messages to /queue/bench, a RECEIPT on
#            every Kth SEND (each K in RECEIPT_EVERY), at most WINDOW SENDs
#            not yet covered by a receipt;
#   consume: the same N back, ack:client-individual, PREFETCH unacknowledged.
# Broker CPU = utime+stime of its process (/proc/PID/stat, all threads)
# across the case; client CPU is the client's own. Installs activemq if it
# is missing. Environment knobs:
#   N (50000), SIZE (1024), WINDOW (1000), RECEIPT_EVERY ("1 100"),
#   PREFETCH (1000), ROUNDS (3), CASE_TIMEOUT (seconds per client run, 300).
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/ferry-target}"
N="${N:-50000}"; SIZE="${SIZE:-1024}"; WINDOW="${WINDOW:-1000}"; RECEIPT_EVERY="${RECEIPT_EVERY:-1 100}"
PREFETCH="${PREFETCH:-1000}"; ROUNDS="${ROUNDS:-3}"; CASE_TIMEOUT="${CASE_TIMEOUT:-300}"
amq_home=/usr/share/activemq

if ! [ -f "$amq_home/bin/activemq.jar" ]; then
  echo "== installing activemq" >&2
  sudo=""
  if [ "$(id -u)" -ne 0 ] && command -v sudo >/dev/null; then sudo="sudo"; fi
  $sudo apt-get update -qq
  # The package's own instance is not enabled; the bench runs a private one.
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends activemq
fi
cargo build -q --release -p ferry --bin ferry
ferry="$CARGO_TARGET_DIR/release/ferry"
amq_version="$(dpkg-query -W -f '${Version}' activemq 2>/dev/null || echo '?')"

work="$(mktemp -d)"
pid=""
stop() {
  if [[ -n "$pid" ]]; then
    kill "$pid" 2>/dev/null || true
    # ActiveMQ shuts down in a few seconds; do not wait for ever.
    for _ in $(seq 100); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    kill -9 "$pid" 2>/dev/null || true
    wait "$pid" 2>/dev/null || true
    pid=""
  fi
}
trap 'stop; rm -rf "$work"' EXIT
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
wait_port() { for _ in $(seq 600); do (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null && return 0; sleep 0.1; done; echo "port $1 never opened" >&2; return 1; }
hz="$(getconf CLK_TCK)"
# CPU seconds (user + system, every thread) of process $1 so far.
cpu_of() { sed 's/.*) //' "/proc/$1/stat" | awk -v hz="$hz" '{ printf "%.2f", ($12 + $13) / hz }'; }

# Starts a broker as $1 (ferry | activemq) with a fresh data directory; sets $port and $pid.
start() {
  port="$(free_port)"
  rm -rf "$work/data"; mkdir -p "$work/data"
  case "$1" in
    ferry)
      "$ferry" serve --data-dir "$work/data" --stomp-listen "127.0.0.1:$port" \
        --kafka-listen "127.0.0.1:$(free_port)" --http-listen "127.0.0.1:$(free_port)" \
        --amqp-listen "127.0.0.1:$(free_port)" --mqtt-listen off \
        --cluster-listen "127.0.0.1:$(free_port)" >"$work/ferry.log" 2>&1 &
      ;;
    activemq)
      # The shipped instance config, its OpenWire connector swapped for STOMP on our port.
      mkdir -p "$work/amq/conf" "$work/amq/tmp"
      sed -e "s#<transportConnector name=\"openwire\" uri=\"[^\"]*\"/>#<transportConnector name=\"stomp\" uri=\"stomp://127.0.0.1:$port\"/>#" \
        /etc/activemq/instances-available/main/activemq.xml >"$work/amq/conf/activemq.xml"
      grep -q "stomp://127.0.0.1:$port" "$work/amq/conf/activemq.xml" || { echo "could not set the STOMP connector" >&2; exit 1; }
      cp /etc/activemq/instances-available/main/log4j2.properties "$work/amq/conf/"
      # JVM options as Debian's activemq-options sets them.
      java -Xms512M -Xmx512M -Dorg.apache.activemq.UseDedicatedTaskRunner=true \
        -Djava.io.tmpdir="$work/amq/tmp" -Dactivemq.classpath="$work/amq/conf:$amq_home/lib/" \
        -Dactivemq.home="$amq_home" -Dactivemq.base="$work/amq" -Dactivemq.conf="$work/amq/conf" \
        -Dactivemq.data="$work/data" -jar "$amq_home/bin/activemq.jar" start "xbean:file:$work/amq/conf/activemq.xml" \
        >"$work/activemq.log" 2>&1 &
      ;;
  esac
  pid=$!
  wait_port "$port" || { tail -20 "$work/$1.log" >&2; exit 1; }
}

# Runs `ferry bench stomp $@` against $port; prints "msg/s MiB/s client-cpu-s seconds broker-cpu-s".
measure() {
  local before after out
  before="$(cpu_of "$pid")"
  out="$(timeout "$CASE_TIMEOUT" "$ferry" bench stomp "$@" --addr "127.0.0.1:$port" --destination /queue/bench --json)"
  after="$(cpu_of "$pid")"
  python3 -c 'import json,sys; r=json.loads(sys.argv[1]); print("%.0f %.2f %.2f %.3f %.2f" % (r["msgs_per_sec"], r["mib_per_sec"], r["client_cpu_s"] or 0, r["seconds"], float(sys.argv[3]) - float(sys.argv[2])))' \
    "$out" "$before" "$after"
}

results="$work/results"
: >"$results"
mib="$(python3 -c "print($N * $SIZE / 1048576)")"
echo "# STOMP benchmark: N=$N SIZE=$SIZE WINDOW=$WINDOW RECEIPT_EVERY=\"$RECEIPT_EVERY\" PREFETCH=$PREFETCH ROUNDS=$ROUNDS"
echo "# $(nproc) CPUs; $(uname -r); ferry $(git rev-parse --short HEAD 2>/dev/null || echo '?'); activemq $amq_version"
echo "# load before: $(cut -d' ' -f1-3 /proc/loadavg)"
printf '%-5s %-9s %-18s %10s %8s %14s %12s %8s\n' round broker case "msg/s" "MiB/s" "broker-CPU/MiB" "client-CPU-s" "client%"
for round in $(seq "$ROUNDS"); do
  # Alternate which broker goes first, so neither always gets the quieter machine.
  order="ferry activemq"; [[ $((round % 2)) -eq 0 ]] && order="activemq ferry"
  for broker in $order; do
    start "$broker"
    for k in $RECEIPT_EVERY; do
      for phase in send consume; do
        if [[ $phase == send ]]; then
          set -- send -n "$N" --size "$SIZE" --receipt-every "$k" --window "$WINDOW"; case="send-r$k"
        else
          set -- consume -n "$N" --prefetch "$PREFETCH"; case="consume-after-r$k"
        fi
        read -r rate mibs client secs bcpu < <(measure "$@")
        per_mib="$(python3 -c "print('%.4f' % ($bcpu / $mib))")"
        pct="$(python3 -c "print('%.0f' % (100 * $client / max($secs, 1e-9)))")"
        printf '%-5s %-9s %-18s %10s %8s %14s %12s %7s%%\n' "$round" "$broker" "$case" "$rate" "$mibs" "$per_mib" "$client" "$pct"
        echo "$round $broker $case $rate $per_mib $pct" >>"$results"
      done
    done
    stop
  done
done
echo "# load after: $(cut -d' ' -f1-3 /proc/loadavg)"
# Ferry / ActiveMQ per case and round (throughput ratio; broker CPU per MiB ratio).
python3 - "$results" <<'EOF'
import sys
rows = [l.split() for l in open(sys.argv[1])]
by = {(r[0], r[1], r[2]): (float(r[3]), float(r[4]), float(r[5])) for r in rows}
print("%-5s %-18s %12s %16s %s" % ("round", "case", "ferry/amq", "CPU/MiB ratio", "client cap"))
# In the order the cases ran (dicts keep insertion order).
for (rnd, broker, case), (rate, per_mib, pct) in by.items():
    if broker != "ferry" or (rnd, "activemq", case) not in by:
        continue
    arate, amib, apct = by[(rnd, "activemq", case)]
    # The client near a core: that figure is the client's limit, not the broker's.
    cap = " ".join(b for b, p in (("ferry", pct), ("activemq", apct)) if p >= 90)
    print(("%-5s %-18s %11.2fx %15.2fx %s" % (rnd, case, rate / max(arate, 1e-9), per_mib / max(amib, 1e-9), cap)).rstrip())
EOF
