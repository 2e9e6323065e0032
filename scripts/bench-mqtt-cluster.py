"""Cross-node MQTT publishes on a three-node Ferry cluster (issue #17):
a paho-mqtt QoS 1 publisher (clean session) on node 1, a QoS 1 subscriber
(clean session) on node 2, so every message crosses the cluster port as an
MQTT route (node 1 routes each publish to both other nodes); at most
WINDOW messages published and not yet delivered. Two ferry
binaries in the same run, alternating round by round: BEFORE (the
reference) and AFTER. Per binary, the median over the rounds of:
msg/s from the first publish to the last delivery, and the CPU all three
broker processes spent (user + system, /proc) per message and per MiB of
bodies; beside them the idle cluster's CPU per second, measured before
each run, and how busy the machine's CPUs were.

Usage: bench-mqtt-cluster.py [messages] [rounds] [body bytes]
(defaults 20000 5 1024)
Env: FERRY_BIN_BEFORE, FERRY_BIN_AFTER (the two ferry binaries).
"""
import importlib.util
import os
import shutil
import statistics
import sys
import tempfile
import threading
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "interop"))
sys.path.insert(0, HERE)
import paho.mqtt.client as mqtt  # noqa: E402
import pika_cluster_test  # noqa: E402

# The AMQP cluster bench's CPU readers (its file name is not a module name).
_spec = importlib.util.spec_from_file_location("bench_amqp_cluster", os.path.join(HERE, "bench-amqp-cluster.py"))
_amqp_bench = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(_amqp_bench)
cpu_seconds, busy_jiffies = _amqp_bench.cpu_seconds, _amqp_bench.busy_jiffies

TOPIC = "bench/cross"
# Messages published and not yet delivered, at most: the route and the
# subscriber's session queue (1,000 by default) would otherwise drop the
# excess, as they do for a publisher faster than its subscribers.
WINDOW = 500


def client(port, name):
    c = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=name, clean_session=True)
    c.max_inflight_messages_set(64)
    c.connect("127.0.0.1", port, keepalive=60)
    return c


def start_cluster(binary, root):
    pika_cluster_test.FERRY = binary
    nodes = {i: pika_cluster_test.Node(i, root) for i in (1, 2, 3)}
    quorum = ",".join(f"{i}@127.0.0.1:{n.ports['cluster']}" for i, n in nodes.items())
    for n in nodes.values():
        n.start(quorum)
    for n in nodes.values():
        pika_cluster_test.eventually(f"node {n.id} listening", lambda n=n: pika_cluster_test.listening(n.ports["mqtt"]))
    # Every node knows the other two (routes go to the registered nodes).
    for n in nodes.values():
        pika_cluster_test.eventually(
            f"node {n.id} to list three brokers",
            lambda n=n: len(pika_cluster_test.metadata(n).brokers) == 3)
    return nodes


def run(nodes, messages, body):
    """One run: (msg/s, broker CPU s per message, the same net of the idle
    cluster's, idle broker CPU s per s, machine busy)."""
    pids = [n.proc.pid for n in nodes.values()]
    got = {"n": 0, "warm": threading.Event(), "done": threading.Event()}
    room = threading.Semaphore(WINDOW)

    def on_message(_c, _u, msg):
        if msg.payload == b"warm-up":
            got["warm"].set()
            return
        got["n"] += 1
        room.release()
        if got["n"] >= messages:
            got["done"].set()

    subscribed = threading.Event()
    sub = client(nodes[2].ports["mqtt"], "bench-sub")
    sub.on_message = on_message
    sub.on_subscribe = lambda *_a: subscribed.set()
    sub.loop_start()
    sub.subscribe(TOPIC, qos=1)
    if not subscribed.wait(30):
        raise RuntimeError("no SUBACK")
    pub = client(nodes[1].ports["mqtt"], "bench-pub")
    pub.loop_start()
    deadline = time.time() + 60
    while not got["warm"].is_set():
        pub.publish(TOPIC, b"warm-up", qos=1).wait_for_publish(10)
        if time.time() > deadline:
            raise RuntimeError("the subscriber on node 2 never got a message published on node 1")
        got["warm"].wait(0.5)
    time.sleep(1)
    idle0, t0 = cpu_seconds(pids), time.perf_counter()
    time.sleep(3)
    idle = (cpu_seconds(pids) - idle0) / (time.perf_counter() - t0)
    acked = threading.Semaphore(0)
    pub.on_publish = lambda *_a: acked.release()
    cpu0, busy0, start = cpu_seconds(pids), busy_jiffies(), time.perf_counter()
    for _ in range(messages):
        if not room.acquire(timeout=60):
            raise RuntimeError(f"{got['n']} of {messages} delivered: the rest lost")
        pub.publish(TOPIC, body, qos=1)
    if not got["done"].wait(300):
        raise RuntimeError(f"{got['n']} of {messages} delivered")
    end = time.perf_counter()
    cpu1, busy1 = cpu_seconds(pids), busy_jiffies()
    for _ in range(messages):
        if not acked.acquire(timeout=60):
            raise RuntimeError("PUBACKs missing")
    for c in (pub, sub):
        c.disconnect()
        c.loop_stop()
    busy = (busy1[0] - busy0[0]) / max(1, busy1[1] - busy0[1])
    net = (cpu1 - cpu0 - idle * (end - start)) / messages
    return messages / (end - start), (cpu1 - cpu0) / messages, net, idle, busy


def main():
    messages = int(sys.argv[1]) if len(sys.argv) > 1 else 20000
    rounds = int(sys.argv[2]) if len(sys.argv) > 2 else 5
    size = int(sys.argv[3]) if len(sys.argv) > 3 else 1024
    body = b"x" * size
    binaries = {"before": os.environ["FERRY_BIN_BEFORE"], "after": os.environ["FERRY_BIN_AFTER"]}
    results = {k: [] for k in binaries}
    for r in range(rounds):
        for name, binary in binaries.items():
            root = tempfile.mkdtemp(prefix=f"ferry-mqtt-cluster-{name}-")
            nodes = start_cluster(binary, root)
            try:
                rate, cpu, net, idle, busy = run(nodes, messages, body)
            finally:
                for n in nodes.values():
                    n.stop()
                shutil.rmtree(root, ignore_errors=True)
            results[name].append((rate, cpu, net, idle, busy))
            print(f"round {r} {name}: {rate:,.0f} msg/s, broker CPU {cpu * 1e6:.1f} us/msg "
                  f"({net * 1e6:.1f} net of the idle cluster's {idle * 1e3:.0f} ms/s), machine {busy:.0%} busy",
                  flush=True)
    mib = size * messages / 2**20
    print(f"\n{messages} messages of {size} B per run, median of {rounds} rounds:")
    med = {}
    for name, rs in results.items():
        rate, cpu, net, idle, busy = (statistics.median(r[i] for r in rs) for i in range(5))
        med[name] = (rate, cpu, net)
        print(f"  {name:6}: {rate:,.0f} msg/s, broker CPU {cpu * 1e6:.1f} us/msg "
              f"= {cpu * messages / mib * 1e3:.1f} ms/MiB ({net * 1e6:.1f} us/msg net of the idle "
              f"cluster's {idle * 1e3:.0f} ms/s), machine {busy:.0%} busy")
    print(f"  after / before: rate {med['after'][0] / med['before'][0]:.2f}x, "
          f"broker CPU per message {med['after'][1] / med['before'][1]:.2f}x "
          f"(net of idle {med['after'][2] / med['before'][2]:.2f}x)")


if __name__ == "__main__":
    main()
