#!/usr/bin/env bash
# Interop tests: real Kafka clients (confluent-kafka, kafka-python, aiokafka, kcat;
# confluent-kafka over SASL_PLAINTEXT SCRAM-SHA-256 with ACLs; confluent-kafka and
# kcat over SASL_SSL SCRAM-SHA-512;
# transactions with the three Python clients; KafkaJS), the seed's pika example
# and pika against RabbitMQ's error answers (AMQP), pika and the seed against a three-node cluster (quorum queue forwarding), paho-mqtt (MQTT 3.1.1 / 5, TCP and WebSocket)
# stomp.py (STOMP 1.0 / 1.1 / 1.2, with pika on the AMQP side), @stomp/stompjs
# (STOMP over WebSocket on the MQTT WebSocket listener's /stomp) and redis-py
# (RESP2 / RESP3, with confluent-kafka and pika on the other side), and pika /
# paho-mqtt over TLS with a vhost-limited user and a topic ACL (authz_tls)
# against a freshly started `ferry serve`. Last line: "interop: N passed, M failed".
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
root="$(dirname "$here")"
venv="${FERRY_VENV:-$root/.venv}"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/ferry-target}"
ferry="$CARGO_TARGET_DIR/debug/ferry"
test_timeout="${INTEROP_TEST_TIMEOUT:-120}"

# --- dependencies -----------------------------------------------------------
if [[ ! -x "$venv/bin/python" ]]; then
    python3 -m venv "$venv"
fi
"$venv/bin/pip" install -q --disable-pip-version-check -r "$here/requirements.txt"

if ! command -v kcat >/dev/null; then
    sudo=""
    [[ $(id -u) -ne 0 ]] && command -v sudo >/dev/null && sudo="sudo"
    $sudo apt-get update -q
    DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -q kcat
fi

# KafkaJS, an independent JavaScript client, and @stomp/stompjs with ws
# (STOMP over WebSocket) (Node and npm from Debian if missing).
if ! command -v npm >/dev/null; then
    sudo=""
    [[ $(id -u) -ne 0 ]] && command -v sudo >/dev/null && sudo="sudo"
    $sudo apt-get update -q
    DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -q nodejs npm
fi
# Installed only when missing or not what package-lock.json says (npm ls
# checks the tree against it), so a warm checkout runs without the registry.
if ! (cd "$here" && npm ls --silent >/dev/null 2>&1); then
    (cd "$here" && npm ci --no-audit --no-fund --silent)
fi

# Always build: a no-op when fresh, and never a stale binary.
(cd "$root" && cargo build -q -p ferry --bin ferry)

# --- broker -------------------------------------------------------------------
port="$("$venv/bin/python" -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')"
export BOOTSTRAP="127.0.0.1:$port"
# MQTT on a free port too, never the well-known 1883 (parallel runs, other brokers).
mqtt_port="$("$venv/bin/python" -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')"
export MQTT_PORT="$mqtt_port"
amqp_port="$("$venv/bin/python" -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')"
export AMQP_PORT="$amqp_port"
mqtt_ws_port="$("$venv/bin/python" -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')"
export MQTT_WS_PORT="$mqtt_ws_port"
stomp_port="$("$venv/bin/python" -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')"
export STOMP_PORT="$stomp_port"
redis_port="$("$venv/bin/python" -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')"
export REDIS_PORT="$redis_port"
sasl_port="$("$venv/bin/python" -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')"
export SASL_BOOTSTRAP="127.0.0.1:$sasl_port" SASL_USER=interop SASL_PASSWORD=interop-secret
ssl_port="$("$venv/bin/python" -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')"
export SSL_BOOTSTRAP="127.0.0.1:$ssl_port" FERRY="$ferry"
work="$(mktemp -d -t ferry-interop.XXXXXX)"
broker_pid=""

# Stop the broker with SIGTERM (SIGKILL after 10 s); returns its exit status.
stop_broker() {
    local pid="$broker_pid" rc=0
    [[ -n "$pid" ]] || return 0
    broker_pid=""
    kill -TERM "$pid" 2>/dev/null || true
    for _ in $(seq 100); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    if kill -0 "$pid" 2>/dev/null; then
        echo "broker still running 10 s after SIGTERM; killing" >&2
        kill -KILL "$pid" 2>/dev/null || true
    fi
    wait "$pid" 2>/dev/null || rc=$?
    return "$rc"
}
cleanup() { stop_broker || true; rm -rf "$work"; }
trap cleanup EXIT

# A SASL listener beside the plain one (sasl_test.py); anonymous clients of
# the plain listener are super users, so the other tests run as without it.
# A user in the store turns MQTT logins on (docs/security.md): paho logs in as
# the super user MQTT_USER. TLS_USER is the vhost- and topic-limited user of
# authz_tls_test.py (pika over AMQPS, paho over MQTTS; the CA is made here).
export MQTT_USER=mqtt MQTT_PASSWORD=mqtt-secret TLS_USER=tlsapp TLS_PASSWORD=tlsapp-secret
export FERRY_BIN="$ferry" TLS_CA="$work/ca.pem"
amqps_port="$("$venv/bin/python" -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')"
mqtts_port="$("$venv/bin/python" -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')"
export AMQPS_PORT="$amqps_port" MQTTS_PORT="$mqtts_port"
openssl req -x509 -newkey rsa:2048 -nodes -days 2 -subj "/CN=ferry interop ca" \
    -keyout "$work/ca.key" -out "$work/ca.pem" 2>/dev/null
openssl req -newkey rsa:2048 -nodes -subj "/CN=127.0.0.1" -keyout "$work/broker.key" -out "$work/broker.csr" 2>/dev/null
printf 'subjectAltName=IP:127.0.0.1,DNS:localhost\n' >"$work/san.ext"
openssl x509 -req -in "$work/broker.csr" -CA "$work/ca.pem" -CAkey "$work/ca.key" -CAcreateserial -days 2 \
    -extfile "$work/san.ext" -out "$work/broker.pem" 2>/dev/null
printf '[amqp]\nvhosts = ["tls-vhost"]\n' >"$work/ferry.toml"
"$ferry" user create "$SASL_USER" --password "$SASL_PASSWORD" --data-dir "$work/data" >/dev/null
"$ferry" user create "$MQTT_USER" --password "$MQTT_PASSWORD" --data-dir "$work/data" >/dev/null
"$ferry" user create "$TLS_USER" --password "$TLS_PASSWORD" --data-dir "$work/data" >/dev/null
# A SASL_SSL listener too (kcat_sasl_ssl_test.sh, sasl_ssl_test.py), with the
# same CA and broker certificate as the AMQPS and MQTTS listeners.
export SSL_CA="$work/ca.pem"
"$ferry" serve --data-dir "$work/data" --config "$work/ferry.toml" \
    --kafka-listen "SASL_SSL://$SSL_BOOTSTRAP,PLAINTEXT://$BOOTSTRAP,SASL_PLAINTEXT://$SASL_BOOTSTRAP" \
    --super-users "User:ANONYMOUS,User:$MQTT_USER" --http-listen 127.0.0.1:0 \
    --tls-cert "$work/broker.pem" --tls-key "$work/broker.key" \
    --mqtt-listen "127.0.0.1:$MQTT_PORT,tls://127.0.0.1:$MQTTS_PORT" --mqtt-ws-listen "127.0.0.1:$MQTT_WS_PORT" \
    --amqp-listen "127.0.0.1:$AMQP_PORT,tls://127.0.0.1:$AMQPS_PORT" --stomp-listen "127.0.0.1:$STOMP_PORT" \
    --redis-listen "127.0.0.1:$REDIS_PORT" >"$work/broker.log" 2>&1 &
broker_pid=$!

ready=0
for _ in $(seq 300); do   # 30 s
    if ! kill -0 "$broker_pid" 2>/dev/null; then break; fi
    if (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null && (exec 3<>"/dev/tcp/127.0.0.1/$AMQP_PORT") 2>/dev/null \
        && (exec 3<>"/dev/tcp/127.0.0.1/$STOMP_PORT") 2>/dev/null \
        && (exec 3<>"/dev/tcp/127.0.0.1/$REDIS_PORT") 2>/dev/null; then
        ready=1; break
    fi
    sleep 0.1
done
if [[ $ready -ne 1 ]]; then
    echo "broker did not start listening on $BOOTSTRAP; log:" >&2
    cat "$work/broker.log" >&2
    echo "interop: 0 passed, 1 failed"
    exit 1
fi
echo "broker up on $BOOTSTRAP (pid $broker_pid)"

# --- tests --------------------------------------------------------------------
passed=0; failed=0; failures=()
run_test() {
    local name="$1"; shift
    echo "=== $name"
    if timeout -k 5 "$test_timeout" "$@"; then
        echo "--- PASS $name"; passed=$((passed + 1))
    else
        echo "--- FAIL $name (exit $?)"; failed=$((failed + 1)); failures+=("$name")
    fi
}

run_test confluent_kafka "$venv/bin/python" "$here/confluent_kafka_test.py"
run_test kafka_python    "$venv/bin/python" "$here/kafka_python_test.py"
run_test aiokafka        "$venv/bin/python" "$here/aiokafka_test.py"
run_test kcat            bash "$here/kcat_test.sh"
run_test sasl            "$venv/bin/python" "$here/sasl_test.py"
run_test sasl_ssl        "$venv/bin/python" "$here/sasl_ssl_test.py"
run_test kcat_sasl_ssl   bash "$here/kcat_sasl_ssl_test.sh"
run_test paho_mqtt       "$venv/bin/python" "$here/paho_mqtt_test.py"
run_test transactions    "$venv/bin/python" "$here/transactions_test.py"
run_test kafkajs         node "$here/kafkajs_test.mjs"
run_test pika_seed       "$venv/bin/python" "$here/pika_seed_test.py"
run_test pika_answers    "$venv/bin/python" "$here/pika_rabbitmq_answers_test.py"
run_test pika_cluster    "$venv/bin/python" "$here/pika_cluster_test.py"
run_test stomp_py        "$venv/bin/python" "$here/stomp_py_test.py"
run_test stompjs_ws      node "$here/stompjs_ws_test.mjs"
run_test redis_py        "$venv/bin/python" "$here/redis_py_test.py"
run_test authz_tls       "$venv/bin/python" "$here/authz_tls_test.py"
# Five parts, each in its own child process with a 75 s limit (GROUPS_PART_TIMEOUT);
# about 40 s when healthy, since every group waits out the broker's default
# 3 s group.initial.rebalance.delay.ms.
test_timeout="${INTEROP_GROUPS_TIMEOUT:-400}" \
run_test groups          "$venv/bin/python" "$here/groups_test.py"

echo "=== broker_shutdown"
if stop_broker; then
    echo "--- PASS broker_shutdown"; passed=$((passed + 1))
else
    echo "--- FAIL broker_shutdown (SIGTERM exit status $?)"; failed=$((failed + 1)); failures+=(broker_shutdown)
fi

if [[ $failed -ne 0 ]]; then
    echo "failed: ${failures[*]}; last 50 broker log lines:"
    tail -n 50 "$work/broker.log"
fi
cleanup; trap - EXIT
echo "interop: $passed passed, $failed failed"
[[ $failed -eq 0 ]]
