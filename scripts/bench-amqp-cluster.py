"""Quorum queues on three nodes (issue #17), measured with pika, against
RabbitMQ's quorum queues on three local nodes in the same run:

1. publish with confirms, 1 KiB persistent messages, from one pika
   SelectConnection that keeps at most `window` messages unconfirmed (as
   real publishers do), and one at a time (window 1: latency-bound):
   - RabbitMQ quorum queue (3 nodes, client on the queue's leader) and
     RabbitMQ classic queue (one node), the peers;
   - Ferry quorum queue (3 nodes) through its leader and through another
     node (forwarded), and Ferry classic queue (one node).
   Each figure is the median of `rounds` runs; beside it the CPU the
   brokers spent (every broker process of the system, user + system time
   from /proc) per MiB of message bodies, the client's own CPU per MiB
   (this process: pika) and how busy the machine's CPUs were, so a rate
   capped by the client's share of the cores shows as such.
2. the consumer-visible gap across a kill -9 of the Ferry queue's leader:
   a worker on a surviving node, a publisher on the other; the gap is the
   time from the kill to the first delivery of a message published after
   it; `kills` times, the killed node restarted and back in the ISR
   between kills.

Usage: bench-amqp-cluster.py [messages] [kills] [window[,window...]] [rounds]
(defaults 10000 20 32 3; several windows: each measured, then window 1)
Env: FERRY_BIN (the ferry binary), RABBITMQ=0 skips RabbitMQ.
"""
import os
import shutil
import statistics
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "interop"))
sys.path.insert(0, HERE)
import pika  # noqa: E402
from pika_cluster_test import Node, eventually, metadata, queue_leaders  # noqa: E402
from rabbitmq_cluster import RabbitCluster  # noqa: E402

BODY = b"x" * 1024
TICKS = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pids):
    """User + system CPU seconds of `pids` so far (children not included)."""
    total = 0
    for pid in pids:
        try:
            with open(f"/proc/{pid}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
            total += int(fields[11]) + int(fields[12])  # utime, stime
        except (OSError, IndexError, ValueError):
            pass
    return total / TICKS


def busy_jiffies():
    """(busy, total) jiffies of all CPUs so far, from /proc/stat."""
    with open("/proc/stat") as f:
        fields = [int(x) for x in f.readline().split()[1:]]
    idle = fields[3] + fields[4]  # idle, iowait
    return sum(fields) - idle, sum(fields)


def publish_windowed(port, queue, n, window):
    """Publishes `n` messages with confirms, at most `window` unconfirmed;
    msg/s from the first publish to the last confirm."""
    st = {"sent": 0, "confirmed": 0, "acked": set(), "nacks": 0, "start": None, "end": None, "ch": None}
    props = pika.BasicProperties(delivery_mode=2)

    def pump():
        while st["sent"] < n and st["sent"] - st["confirmed"] < window:
            st["ch"].basic_publish("", queue, BODY, props)
            st["sent"] += 1

    def on_confirm(frame):
        m = frame.method
        if isinstance(m, pika.spec.Basic.Nack):
            st["nacks"] += 1
        if m.multiple:
            st["confirmed"] = max(st["confirmed"], m.delivery_tag)
        else:
            st["acked"].add(m.delivery_tag)
        while st["confirmed"] + 1 in st["acked"]:
            st["confirmed"] += 1
            st["acked"].discard(st["confirmed"])
        if st["confirmed"] >= n:
            st["end"] = time.perf_counter()
            conn.close()
        else:
            pump()

    def on_channel(ch):
        st["ch"] = ch
        ch.confirm_delivery(on_confirm)
        st["start"] = time.perf_counter()
        pump()

    conn = pika.SelectConnection(
        pika.ConnectionParameters("127.0.0.1", port, connection_attempts=3, retry_delay=1),
        on_open_callback=lambda c: c.channel(on_open_callback=on_channel),
        on_close_callback=lambda c, _reason: c.ioloop.stop())
    conn.ioloop.start()
    if st["end"] is None:
        raise RuntimeError(f"publishing to {queue} on port {port} did not finish")
    if st["nacks"]:
        raise RuntimeError(f"{st['nacks']} publishes to {queue} nacked")
    return n / (st["end"] - st["start"])


def declare(port, queue, kind):
    conn = pika.BlockingConnection(pika.ConnectionParameters("127.0.0.1", port, connection_attempts=5, retry_delay=1))
    ch = conn.channel()
    ch.queue_declare(queue=queue, durable=True, arguments={"x-queue-type": kind})
    ch.queue_purge(queue)
    conn.close()


def purge(port, queue):
    conn = pika.BlockingConnection(pika.ConnectionParameters("127.0.0.1", port))
    conn.channel().queue_purge(queue)
    conn.close()


def measure(port, queue, n, window, rounds, pids):
    """Median msg/s over `rounds` runs and the brokers' CPU ms per MiB
    (one at a time: a twentieth of the messages, it is latency-bound)."""
    if window == 1:
        n = max(100, n // 20)
    publish_windowed(port, queue, min(n, 500), window)  # warm-up
    purge(port, queue)
    mib = n * len(BODY) / 2**20
    rates, cpu, client, busy = [], [], [], []
    for _ in range(rounds):
        before, client_before, jiffies_before = cpu_seconds(pids), time.process_time(), busy_jiffies()
        rates.append(publish_windowed(port, queue, n, window))
        cpu.append((cpu_seconds(pids) - before) * 1000 / mib)
        client.append((time.process_time() - client_before) * 1000 / mib)
        jiffies = busy_jiffies()
        busy.append((jiffies[0] - jiffies_before[0]) / max(1, jiffies[1] - jiffies_before[1]))
        purge(port, queue)
    return tuple(statistics.median(x) for x in (rates, cpu, client, busy))


def rabbitmq(root, n, windows, rounds):
    cluster = RabbitCluster(os.path.join(root, "rabbitmq"), 3)
    try:
        cluster.start()
        leader, other = cluster.nodes[0]["amqp"], cluster.nodes[1]["amqp"]
        # Declared through the first node: a quorum queue's leader is the
        # node it is declared on; the classic queue lives there too.
        declare(leader, "bench-q", "quorum")
        declare(leader, "bench-c", "classic")
        pids = cluster.pids()
        rows = {}
        for w in (*windows, 1):
            rows[("rabbitmq quorum queue, client on its leader", w)] = measure(leader, "bench-q", n, w, rounds, pids)
            rows[("rabbitmq quorum queue, client on another node", w)] = measure(other, "bench-q", n, w, rounds, pids)
            rows[("rabbitmq classic queue", w)] = measure(leader, "bench-c", n, w, rounds, pids)
        return rows
    finally:
        cluster.stop()


def ferry(root, n, kills, windows, rounds):
    nodes = {i: Node(i, root) for i in (1, 2, 3)}
    quorum = ",".join(f"{i}@127.0.0.1:{node.ports['cluster']}" for i, node in nodes.items())
    rows, gaps = {}, []
    try:
        for node in nodes.values():
            node.start(quorum)
        for node in nodes.values():
            eventually(f"node {node.id} with 3 brokers", lambda node=node: len(metadata(node).brokers) == 3)
        eventually("quorum queue declared", lambda: declare(nodes[1].ports["amqp"], "bench-q", "quorum") or True)
        leader = eventually("its leader", lambda: max(queue_leaders(nodes[1]).values(), default=-1) > 0
                            and max(queue_leaders(nodes[1]).values()))
        other = next(i for i in nodes if i != leader)
        declare(nodes[leader].ports["amqp"], "bench-c", "classic")
        pids = [node.proc.pid for node in nodes.values()]
        for w in (*windows, 1):
            rows[("ferry quorum queue, client on its leader", w)] = measure(
                nodes[leader].ports["amqp"], "bench-q", n, w, rounds, pids)
            rows[("ferry quorum queue, client on another node", w)] = measure(
                nodes[other].ports["amqp"], "bench-q", n, w, rounds, pids)
            rows[("ferry classic queue", w)] = measure(nodes[leader].ports["amqp"], "bench-c", n, w, rounds, pids)
        gaps = kill_gaps(nodes, quorum, other, kills)
    finally:
        for node in nodes.values():
            node.stop()
    return rows, gaps


def kill_gaps(nodes, quorum, via, kills):
    gaps = []
    for k in range(kills):
        topic, leader = next(iter(queue_leaders(nodes[via]).items()))
        alive = [i for i in nodes if i != leader]
        via = alive[0]
        worker, pub = nodes[alive[0]], nodes[alive[1]]
        wconn = pika.BlockingConnection(worker.amqp())
        wch = wconn.channel()
        wch.basic_qos(prefetch_count=10)
        pconn = pika.BlockingConnection(pub.amqp())
        pch = pconn.channel()
        pch.basic_publish(exchange="", routing_key="bench-q", body=b"before")
        for method, _p, _b in wch.consume("bench-q", inactivity_timeout=30):
            assert method is not None
            wch.basic_ack(method.delivery_tag)
            break
        killed = time.perf_counter()
        nodes[leader].kill9()
        pch.basic_publish(exchange="", routing_key="bench-q", body=b"after")
        for method, _p, body in wch.consume("bench-q", inactivity_timeout=60):
            assert method is not None, "no delivery within 60 s of the kill"
            wch.basic_ack(method.delivery_tag)
            if body == b"after":
                break
        gaps.append(time.perf_counter() - killed)
        print(f"  kill {k + 1}: node {leader}, gap {gaps[-1]:.2f} s", flush=True)
        wch.cancel()
        wconn.close()
        pconn.close()
        nodes[leader].start(quorum)
        eventually("the killed node back in the ISR", lambda: all(
            len(t.partitions[0].isrs) == 3 for name, t in metadata(nodes[via]).topics.items()
            if name == topic), within=120)
    return gaps


def main():
    n = int(sys.argv[1]) if len(sys.argv) > 1 else 10000
    kills = int(sys.argv[2]) if len(sys.argv) > 2 else 20
    windows = [int(w) for w in sys.argv[3].split(",")] if len(sys.argv) > 3 else [32]
    rounds = int(sys.argv[4]) if len(sys.argv) > 4 else 3
    root = tempfile.mkdtemp(prefix="ferry-bench-amqp-cluster-")
    try:
        rows = {}
        if os.environ.get("RABBITMQ", "1") != "0":
            rows.update(rabbitmq(root, n, windows, rounds))
        ferry_rows, gaps = ferry(root, n, kills, windows, rounds)
        rows.update(ferry_rows)
        for w in (*windows, 1):
            count = n if w > 1 else max(100, n // 20)
            print(f"publish with confirms, 1 KiB persistent, {count} messages, at most {w} unconfirmed, "
                  f"median of {rounds}:")
            ref = rows.get(("rabbitmq quorum queue, client on its leader", w))
            for (name, ww), (rate, cpu, client, busy) in rows.items():
                if ww != w:
                    continue
                vs = f"{rate / ref[0]:5.2f}x" if ref else "   - "
                print(f"  {name:48} {rate:8.0f} msg/s  {vs} of rabbitmq quorum  "
                      f"broker CPU {cpu:7.1f} ms/MiB  client CPU {client:7.1f} ms/MiB  machine {busy:4.0%} busy")
        if gaps:
            print(f"consumer gap across {len(gaps)} leader kills: p50 {statistics.median(gaps):.2f} s, "
                  f"max {max(gaps):.2f} s")
    finally:
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
