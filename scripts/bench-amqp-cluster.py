"""Quorum queues on a three-node Ferry cluster (issue #17), measured with pika:

1. publish with confirms, 1 KiB persistent messages, one at a time (pika's
   BlockingConnection waits for each confirm: a latency-bound rate), into
   a quorum queue through its leader, into the same queue through a node
   that forwards to the leader, and into a classic queue (one node, the
   reference measured in the same run);
2. the consumer-visible gap across a kill -9 of the queue's leader: a
   worker on a surviving node, a publisher on the other; the gap is the time
   from the kill to the first delivery of a message published after it.

Usage: bench-amqp-cluster.py [messages] [kills]   (FERRY_BIN: the ferry binary)
"""
import os
import statistics
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "interop"))
import pika  # noqa: E402
from pika_cluster_test import Node, eventually, metadata, queue_leaders  # noqa: E402

import shutil  # noqa: E402
import tempfile  # noqa: E402

BODY = b"x" * 1024


def publish_rate(node, queue, n):
    conn = pika.BlockingConnection(node.amqp())
    ch = conn.channel()
    ch.confirm_delivery()
    props = pika.BasicProperties(delivery_mode=2)
    for _ in range(20):  # warm-up
        ch.basic_publish(exchange="", routing_key=queue, body=BODY, properties=props)
    started = time.perf_counter()
    for _ in range(n):
        ch.basic_publish(exchange="", routing_key=queue, body=BODY, properties=props)
    rate = n / (time.perf_counter() - started)
    ch.queue_purge(queue)
    conn.close()
    return rate


def declare(node, queue, kind):
    conn = pika.BlockingConnection(node.amqp())
    conn.channel().queue_declare(queue=queue, durable=True, arguments={"x-queue-type": kind})
    conn.close()


def main():
    n = int(sys.argv[1]) if len(sys.argv) > 1 else 2000
    kills = int(sys.argv[2]) if len(sys.argv) > 2 else 5
    root = tempfile.mkdtemp(prefix="ferry-bench-amqp-cluster-")
    nodes = {i: Node(i, root) for i in (1, 2, 3)}
    quorum = ",".join(f"{i}@127.0.0.1:{n.ports['cluster']}" for i, n in nodes.items())
    try:
        for node in nodes.values():
            node.start(quorum)
        for node in nodes.values():
            eventually(f"node {node.id} with 3 brokers", lambda node=node: len(metadata(node).brokers) == 3)
        eventually("quorum queue declared", lambda: declare(nodes[1], "bench-q", "quorum") or True)
        leader = eventually("its leader", lambda: max(queue_leaders(nodes[1]).values(), default=-1) > 0
                            and max(queue_leaders(nodes[1]).values()))
        other = next(i for i in nodes if i != leader)
        declare(nodes[leader], "bench-c", "classic")
        classic = publish_rate(nodes[leader], "bench-c", n)
        direct = publish_rate(nodes[leader], "bench-q", n)
        forwarded = publish_rate(nodes[other], "bench-q", n)
        print(f"publish with confirms, 1 KiB persistent, one at a time, {n} messages:")
        print(f"  classic queue (node {leader})            {classic:8.0f} msg/s  1.00x")
        print(f"  quorum queue through its leader        {direct:8.0f} msg/s  {direct / classic:.2f}x")
        print(f"  quorum queue through another node      {forwarded:8.0f} msg/s  {forwarded / classic:.2f}x")

        gaps = []
        for k in range(kills):
            topic, leader = next(iter(queue_leaders(nodes[other]).items()))
            alive = [i for i in nodes if i != leader]
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
                len(t.partitions[0].isrs) == 3 for name, t in metadata(nodes[other]).topics.items()
                if name == topic), within=120)
        if gaps:
            print(f"consumer gap across {len(gaps)} leader kills: p50 {statistics.median(gaps):.2f} s, "
                  f"max {max(gaps):.2f} s")
    finally:
        for node in nodes.values():
            node.stop()
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
