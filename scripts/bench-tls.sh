#!/usr/bin/env bash
# Kafka over SASL_SSL against PLAINTEXT on one release broker, same run
# (docs/benchmarks.md, issue #18), with kcat (librdkafka) as the client:
#  1. produce RECORDS (default 200000) records of 1 KiB, acks=all, into a
#     fresh 1-partition topic through each listener (SASL_SSL with
#     SCRAM-SHA-512), then consume each topic from the beginning through the
#     same listener; wall time and broker CPU (utime + stime from /proc) per
#     MiB for every phase. ROUNDS (default 2) alternates which listener goes
#     first.
#     MECHANISM (default SCRAM-SHA-512) is the SASL_SSL login; Debian's kcat
#     (librdkafka 2.0.2) needs a broker with the doubled-nonce SCRAM fix for
#     SCRAM (PLAIN logs in once per connection just the same).
#  2. SCRAM-SHA-512 logins per second: LOGINS (default 300) connections,
#     each one Metadata request, over SASL_PLAINTEXT, against the same number
#     over PLAINTEXT (connection and Metadata without a login: the
#     reference): with PYTHON (a Python with confluent-kafka) one AdminClient
#     after another, else kcat -L runs PARALLEL (default 4) at a time;
#     beside the PBKDF2-HMAC-SHA-512 cost at the
#     user's iteration count (ITERATIONS, default 4096), measured in the
#     same run (Python hashlib, OpenSSL, as librdkafka uses) - the client
#     derives the salted password on every login; the broker keeps only the
#     derived keys and does two HMACs and a hash.
# Prints the 1-minute load average before and after: the machine is shared.
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/ferry-target}"
records="${RECORDS:-200000}"
rounds="${ROUNDS:-2}"
logins="${LOGINS:-300}"
parallel="${PARALLEL:-4}"
iterations="${ITERATIONS:-4096}"
mechanism="${MECHANISM:-SCRAM-SHA-512}"

# FERRY_BIN: an already built binary (a dry run of the script).
if [ -z "${FERRY_BIN:-}" ]; then cargo build -q --release --locked -p ferry --bin ferry; fi
ferry="${FERRY_BIN:-$CARGO_TARGET_DIR/release/ferry}"
work="$(mktemp -d -t ferry-bench-tls.XXXXXX)"
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
plain="127.0.0.1:$(free_port)"
sasl="127.0.0.1:$(free_port)"
ssl="127.0.0.1:$(free_port)"

openssl req -x509 -newkey rsa:2048 -nodes -days 2 -subj "/CN=ferry bench ca" \
  -keyout "$work/ca.key" -out "$work/ca.pem" 2>/dev/null
openssl req -newkey rsa:2048 -nodes -subj "/CN=localhost" -keyout "$work/broker.key" -out "$work/broker.csr" 2>/dev/null
printf 'subjectAltName=IP:127.0.0.1,DNS:localhost\n' >"$work/san.ext"
openssl x509 -req -in "$work/broker.csr" -CA "$work/ca.pem" -CAkey "$work/ca.key" -CAcreateserial -days 2 \
  -extfile "$work/san.ext" -out "$work/broker.pem" 2>/dev/null
"$ferry" user create bench --password bench-secret --iterations "$iterations" --data-dir "$work/data" >/dev/null

FERRY_LOG=warn "$ferry" serve --data-dir "$work/data" \
  --kafka-listen "PLAINTEXT://$plain,SASL_PLAINTEXT://$sasl,SASL_SSL://$ssl" \
  --tls-cert "$work/broker.pem" --tls-key "$work/broker.key" --super-users User:bench,User:ANONYMOUS \
  --http-listen 127.0.0.1:0 --mqtt-listen off --amqp-listen off --stomp-listen off --redis-listen off &
broker=$!
trap 'kill -TERM $broker 2>/dev/null || true; wait $broker 2>/dev/null || true; rm -rf "$work"' EXIT
for _ in $(seq 300); do
  if (exec 3<>"/dev/tcp/${plain%:*}/${plain#*:}") 2>/dev/null && (exec 3<>"/dev/tcp/${ssl%:*}/${ssl#*:}") 2>/dev/null; then break; fi
  sleep 0.1
done

scram=(-X sasl.mechanism=SCRAM-SHA-512 -X sasl.username=bench -X sasl.password=bench-secret)
tls=(-X security.protocol=SASL_SSL -X "ssl.ca.location=$work/ca.pem" -X "sasl.mechanism=$mechanism"
     -X sasl.username=bench -X sasl.password=bench-secret)
python3 -c "import sys; v = 'x' * 1024; sys.stdout.write((v + '\n') * int(sys.argv[1]))" "$records" >"$work/records"
cpu() { awk '{print $14 + $15}' "/proc/$broker/stat"; }
results="$work/results"
load_before="$(cut -d' ' -f1 /proc/loadavg)"

# Busy and total ticks of the whole machine (/proc/stat): on 2 cores the
# client (kcat: librdkafka with OpenSSL) competes with the broker, so each
# phase also records the client's CPU and how busy the machine was.
machine() { awk '/^cpu / {print $2 + $3 + $4 + $7 + $8, $2 + $3 + $4 + $5 + $6 + $7 + $8}' /proc/stat; }
phase() { # name, then the command (stdin from the records file for produce)
  local name="$1"; shift
  sync
  local c0 t0 c1 t1 m0 m1 client
  c0="$(cpu)"; t0="$(date +%s.%N)"; m0="$(machine)"
  client="$( { TIMEFORMAT='%U %S'; time "$@" >/dev/null 2>&1; } 2>&1 | tail -1)"
  t1="$(date +%s.%N)"; c1="$(cpu)"; m1="$(machine)"
  echo "$name $t0 $t1 $c0 $c1 $client $m0 $m1" >>"$results"
}
produce() { # listener address, topic, extra kcat args...
  local addr="$1" topic="$2"; shift 2
  kcat -P -b "$addr" -t "$topic" -X acks=all -X linger.ms=5 "$@" <"$work/records"
}
consume() {
  local addr="$1" topic="$2"; shift 2
  kcat -C -b "$addr" -t "$topic" -o beginning -e -q -f '%s\n' "$@" >/dev/null
}

for round in $(seq "$rounds"); do
  for l in plain ssl; do "$ferry" topic create "$l-$round" --partitions 1 --brokers "$plain" >/dev/null; done
  order=(plain ssl); [ $((round % 2)) -eq 0 ] && order=(ssl plain)
  for l in "${order[@]}"; do
    if [ "$l" = plain ]; then phase "produce-plain" produce "$plain" "plain-$round"
    else phase "produce-sasl_ssl" produce "$ssl" "ssl-$round" "${tls[@]}"; fi
  done
  for l in "${order[@]}"; do
    if [ "$l" = plain ]; then phase "consume-plain" consume "$plain" "plain-$round"
    else phase "consume-sasl_ssl" consume "$ssl" "ssl-$round" "${tls[@]}"; fi
  done
done

if [ -n "${PYTHON:-}" ]; then
  parallel=1
  many() { # address, then SASL on/off: one AdminClient (connection, login, Metadata) after another
    "$PYTHON" - "$logins" "$@" <<'PY'
import sys
from confluent_kafka.admin import AdminClient
n, addr, sasl = int(sys.argv[1]), sys.argv[2], sys.argv[3] == "sasl"
conf = {"bootstrap.servers": addr}
if sasl:
    conf.update({"security.protocol": "SASL_PLAINTEXT", "sasl.mechanism": "SCRAM-SHA-512",
                 "sasl.username": "bench", "sasl.password": "bench-secret"})
for _ in range(n):
    AdminClient(conf).list_topics(timeout=10)
PY
  }
  phase "metadata-plaintext" many "$plain" plain
  phase "login-scram-sha-512" many "$sasl" sasl
else
  many() { # kcat -L runs, $parallel at a time
    seq "$logins" | xargs -P "$parallel" -I{} kcat -L -b "$@" -m 10 >/dev/null
  }
  phase "metadata-plaintext" many "$plain"
  phase "login-scram-sha-512" many "$sasl" -X security.protocol=SASL_PLAINTEXT "${scram[@]}"
fi
pbkdf2_ms="$(python3 -c '
import hashlib, sys, time
n, it = 200, int(sys.argv[1])
t = time.perf_counter()
for _ in range(n):
    hashlib.pbkdf2_hmac("sha512", b"bench-secret", b"0123456789abcdef", it)
print((time.perf_counter() - t) / n * 1000)' "$iterations")"
load_after="$(cut -d' ' -f1 /proc/loadavg)"

python3 - "$results" "$records" "$logins" "$parallel" "$iterations" "$pbkdf2_ms" "$load_before" "$load_after" "$(getconf CLK_TCK)" "$mechanism" <<'EOF'
import collections, sys
path, records, logins, parallel, iters, pbkdf2_ms, lb, la, tck, mech = sys.argv[1:]
records, logins, parallel, tck = int(records), int(logins), int(parallel), int(tck)
mib = records * 1024 / 2**20
agg = collections.defaultdict(lambda: [0.0, 0.0, 0])
client = collections.defaultdict(float)
busy = collections.defaultdict(lambda: [0, 0])
for line in open(path):
    name, t0, t1, c0, c1, cu, cs, mb0, mt0, mb1, mt1 = line.split()
    a = agg[name]
    a[0] += float(t1) - float(t0)
    a[1] += (float(c1) - float(c0)) / tck
    a[2] += 1
    client[name] += float(cu) + float(cs)
    busy[name][0] += int(mb1) - int(mb0)
    busy[name][1] += int(mt1) - int(mt0)
print(f"load average (1 min): {lb} before, {la} after; 2 cores; SASL_SSL login {mech}")
print(f"{'phase':<22}{'runs':>5}{'MiB/s':>8}{'broker CPU ms/MiB':>19}{'client CPU ms/MiB':>19}{'machine busy':>14}")
rate = {}
for name in ("produce-plain", "produce-sasl_ssl", "consume-plain", "consume-sasl_ssl"):
    secs, cpu, n = agg[name]
    rate[name] = mib * n / secs
    b, t = busy[name]
    print(f"{name:<22}{n:>5}{rate[name]:>8.1f}{cpu * 1000 / (mib * n):>19.2f}"
          f"{client[name] * 1000 / (mib * n):>19.2f}{100 * b / max(t, 1):>13.0f}%")
for kind in ("produce", "consume"):
    print(f"{kind} SASL_SSL / PLAINTEXT: {rate[kind + '-sasl_ssl'] / rate[kind + '-plain']:.2f}x")
# Per round (a phase of each listener per round, in file order): the median
# round resists a load spike on the shared machine better than the sums.
rounds = collections.defaultdict(list)
for line in open(path):
    name, t0, t1, c0, c1 = line.split()[:5]
    rounds[name].append((mib / (float(t1) - float(t0)), (float(c1) - float(c0)) / tck * 1000 / mib))
med = lambda xs: sorted(xs)[len(xs) // 2] if len(xs) % 2 else sum(sorted(xs)[len(xs) // 2 - 1:len(xs) // 2 + 1]) / 2
for kind in ("produce", "consume"):
    p, t = rounds[kind + "-plain"], rounds[kind + "-sasl_ssl"]
    ratios = [b[0] / a[0] for a, b in zip(p, t)]
    print(f"{kind} per round SASL_SSL/PLAINTEXT: {' '.join(f'{r:.2f}' for r in ratios)}; median {med(ratios):.2f}x; "
          f"median broker CPU ms/MiB {med([a[1] for a in p]):.2f} PLAINTEXT, {med([b[1] for b in t]):.2f} SASL_SSL")
meta, login = agg["metadata-plaintext"], agg["login-scram-sha-512"]
per_meta, per_login = meta[0] / logins * parallel, login[0] / logins * parallel
print(f"connect + Metadata over PLAINTEXT: {logins / meta[0]:.0f}/s ({per_meta * 1000:.1f} ms each, {parallel} at once); "
      f"broker CPU {meta[1] * 1000 / logins:.2f} ms each")
print(f"the same with a SCRAM-SHA-512 login: {logins / login[0]:.0f}/s ({per_login * 1000:.1f} ms each); "
      f"broker CPU {login[1] * 1000 / logins:.2f} ms each")
print(f"a login adds {(per_login - per_meta) * 1000:.1f} ms; PBKDF2-HMAC-SHA-512 x {iters} (the client's share) "
      f"costs {float(pbkdf2_ms):.1f} ms here")
EOF
