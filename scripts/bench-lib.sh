# Shared by the cluster benchmark scripts (bench-cluster.sh,
# bench-replication.sh): source it after setting `limit` (seconds) and
# `bench` (the script's name, for messages and the work directory).
# It builds the release binary unless FERRY_BIN names one, makes the work
# directory, and bounds the run: past `limit` seconds the script ends
# itself, and on any exit every node in `pid` is killed and the work
# directory removed.
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/ferry-target}"

# FERRY_BIN: a release binary built before (skips the build).
if [ -z "${FERRY_BIN:-}" ]; then
  cargo build -q --release --locked -p ferry --bin ferry
fi
ferry="${FERRY_BIN:-$CARGO_TARGET_DIR/release/ferry}"
work="$(mktemp -d -t "ferry-$bench.XXXXXX")"
declare -A pid=() kafka=() http=() cport=()
stop_all() {
  for n in "${!pid[@]}"; do kill -9 "${pid[$n]}" 2>/dev/null || true; done
  for n in "${!pid[@]}"; do wait "${pid[$n]}" 2>/dev/null || true; done
  pid=()
}
watchdog=
trap 'stop_all; [ -z "$watchdog" ] || kill "$watchdog" 2>/dev/null || true; rm -rf "$work"' EXIT
trap 'exit 143' TERM INT
(
  trap 'kill "$s" 2>/dev/null; exit 0' TERM
  sleep "$limit" & s=$!
  wait "$s"
  echo "$bench: over ${limit}s, stopping" >&2
  kill -TERM $$
) &
watchdog=$!
ulimit -n 65536 2>/dev/null || true

# Ports below the kernel's ephemeral range (32768+), so concurrent test
# runs, which take ephemeral ports, cannot grab one between this check and
# the node's bind.
free_port() {
  python3 -c 'import random, socket
while True:
    p = random.randint(20000, 32000)
    s = socket.socket()
    try:
        s.bind(("127.0.0.1", p))
        print(p)
        break
    except OSError:
        pass
    finally:
        s.close()'
}
now_ms() { echo $(( $(date +%s%N) / 1000000 )); }
