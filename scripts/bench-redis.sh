#!/usr/bin/env bash
# Redis benchmark: Ferry's Redis front-end (release) against Debian's
# redis-server in its durable modes (appendonly yes with appendfsync always,
# then everysec), on loopback, in the same run (docs/benchmarks.md, "## Redis").
# Producing: redis-benchmark's XADD and RPUSH (C clients, no pipelining).
# Consuming: scripts/bench-redis-consume.py, workers doing XREADGROUP COUNT B
# + XACK of what they read, the same driver for both servers.
# Broker CPU = utime+stime of the server process (/proc/PID/stat, all
# threads) across each case, per MiB of payload (32-byte values).
# Installs redis-server / redis-tools if missing. Environment knobs:
#   N (requests per producing case, 20000), C (connections, 50),
#   ENTRIES (entries per consuming case, 50000), WORKERS (4), BATCH (100), ROUNDS (3),
#   FERRY_BIN (a ferry binary to measure; default: build the release one).
set -euo pipefail
cd "$(dirname "$0")/.."
root="$(pwd)"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/ferry-target}"
N="${N:-20000}"; C="${C:-50}"; ENTRIES="${ENTRIES:-50000}"; WORKERS="${WORKERS:-4}"; BATCH="${BATCH:-100}"
ROUNDS="${ROUNDS:-3}"
venv="${FERRY_VENV:-$root/.venv}"

if ! command -v redis-server >/dev/null || ! command -v redis-benchmark >/dev/null; then
  echo "== installing redis-server, redis-tools" >&2
  sudo=""
  if [ "$(id -u)" -ne 0 ] && command -v sudo >/dev/null; then sudo="sudo"; fi
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends redis-server redis-tools
fi
[[ -x "$venv/bin/python" ]] || python3 -m venv "$venv"
"$venv/bin/pip" install -q --disable-pip-version-check "redis==8.1.0"
# FERRY_BIN: measure that binary instead of building the release one
# (e.g. two builds compared in one run of the same machine state).
if [[ -n "${FERRY_BIN:-}" ]]; then
  ferry="$FERRY_BIN"
else
  cargo build -q --release -p ferry --bin ferry
  ferry="$CARGO_TARGET_DIR/release/ferry"
fi

work="$(mktemp -d)"
pid=""
stop() { if [[ -n "$pid" ]]; then kill "$pid" 2>/dev/null || true; wait "$pid" 2>/dev/null || true; pid=""; fi; }
trap 'stop; rm -rf "$work"' EXIT
free_port() { "$venv/bin/python" -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
wait_port() { for _ in $(seq 300); do (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null && return 0; sleep 0.1; done; echo "port $1 never opened" >&2; return 1; }

# Starts a server as $1 (ferry | always | everysec); sets $port and $pid.
start() {
  port="$(free_port)"
  rm -rf "$work/data"; mkdir -p "$work/data"
  case "$1" in
    ferry)
      "$ferry" serve --data-dir "$work/data" --redis-listen "127.0.0.1:$port" \
        --kafka-listen "127.0.0.1:$(free_port)" --http-listen "127.0.0.1:$(free_port)" \
        --amqp-listen "127.0.0.1:$(free_port)" --mqtt-listen off --stomp-listen off \
        --cluster-listen "127.0.0.1:$(free_port)" >"$work/ferry.log" 2>&1 &
      ;;
    *)
      redis-server --port "$port" --bind 127.0.0.1 --dir "$work/data" --save "" \
        --appendonly yes --appendfsync "$1" --daemonize no >"$work/redis.log" 2>&1 &
      ;;
  esac
  pid=$!
  wait_port "$port"
}

# CPU seconds (user + system, every thread) of process $1 so far.
hz="$(getconf CLK_TCK)"
cpu_of() { sed 's/.*) //' "/proc/$1/stat" | awk -v hz="$hz" '{ printf "%.3f", ($12 + $13) / hz }'; }
# Broker CPU seconds per MiB of 32-byte payloads: $1 CPU seconds over $2 payloads.
per_mib() { python3 -c "import sys; print('%.2f' % (float(sys.argv[1]) / (int(sys.argv[2]) * 32 / 1048576)))" "$1" "$2"; }

# "requests/s broker-CPU-s" of one redis-benchmark command against $port.
produce() {
  local before after rate
  before="$(cpu_of "$pid")"
  rate="$(redis-benchmark -p "$port" -n "$N" -c "$C" -q "$@" 2>/dev/null \
    | tr '\r' '\n' | awk '/requests per second/ { for (i = 1; i <= NF; i++) if ($(i+1) == "requests") v = $i } END { print v }')"
  after="$(cpu_of "$pid")"
  echo "$rate $(python3 -c "import sys; print('%.3f' % (float(sys.argv[2]) - float(sys.argv[1])))" "$before" "$after")"
}

echo "# Redis benchmark: N=$N C=$C ENTRIES=$ENTRIES WORKERS=$WORKERS BATCH=$BATCH ROUNDS=$ROUNDS"
echo "# $(nproc) CPUs; $(uname -r); ferry ${FERRY_BIN:-$(git rev-parse --short HEAD 2>/dev/null || echo '?')}; load $(cut -d' ' -f1-3 /proc/loadavg)"
echo "# per case: rate, then broker CPU seconds per MiB of 32-byte payloads"
printf '%-6s %-9s %12s %8s %12s %8s %18s %8s\n' round server "XADD/s" "CPU/MiB" "RPUSH/s" "CPU/MiB" "XREADGROUP+XACK/s" "CPU/MiB"
for round in $(seq "$ROUNDS"); do
  for server in ferry always everysec; do
    start "$server"
    read -r xadd xadd_cpu < <(produce XADD bench-stream '*' field 0123456789abcdef0123456789abcdef)
    read -r rpush rpush_cpu < <(produce RPUSH bench-list 0123456789abcdef0123456789abcdef)
    read -r consume consume_cpu < <("$venv/bin/python" scripts/bench-redis-consume.py --port "$port" --entries "$ENTRIES" \
      --workers "$WORKERS" --batch "$BATCH" --pid "$pid")
    printf '%-6s %-9s %12s %8s %12s %8s %18s %8s\n' "$round" "$server" \
      "$xadd" "$(per_mib "$xadd_cpu" "$N")" "$rpush" "$(per_mib "$rpush_cpu" "$N")" \
      "$consume" "$(per_mib "$consume_cpu" "$ENTRIES")"
    stop
  done
done
echo "# load after: $(cut -d' ' -f1-3 /proc/loadavg)"
