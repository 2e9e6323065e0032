"""pika against a three-node Ferry cluster (issue #17): a quorum queue led
by one node; pika publishes with confirms through another node and a
task-queue worker (the seed's tutorial: manual acks, small prefetch)
consumes through the third, both forwarded by their nodes. The queue's
leader is killed with SIGKILL in the middle: every confirmed message is
delivered, none acknowledged comes back, the one out with the worker at the
kill comes back flagged redelivered.

Then the seed's pika task-queue program (its text, taken verbatim from
pika_seed_test.py) against the same cluster: `task_queue` exists as a
quorum queue (the seed's own declaration, without arguments, is
equivalent), the seed runs through a node that does not lead it, before
and after the leader is killed in the middle; a worker on the third node
gets both messages.

Starts its own three `ferry serve` processes (FERRY_BIN) on free loopback
ports, in a temporary directory; stops them at the end (bounded: every
wait has a deadline).
"""
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time

import pika
from confluent_kafka.admin import AdminClient

FERRY = os.environ.get("FERRY_BIN") or os.path.join(
    os.environ.get("CARGO_TARGET_DIR", os.path.expanduser("~/.cache/ferry-target")), "debug", "ferry")
QUEUE = "task_queue_quorum"


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


class Node:
    def __init__(self, node_id, root):
        self.id = node_id
        self.data = os.path.join(root, f"node{node_id}")
        self.ports = {k: free_port() for k in ("kafka", "http", "mqtt", "amqp", "mqtt_ws", "cluster")}
        self.proc = None

    def start(self, quorum):
        args = [FERRY, "serve", "--data-dir", self.data, "--node-id", str(self.id),
                "--controller-quorum", quorum,
                "--kafka-listen", f"127.0.0.1:{self.ports['kafka']}",
                "--http-listen", f"127.0.0.1:{self.ports['http']}",
                "--mqtt-listen", f"127.0.0.1:{self.ports['mqtt']}",
                "--amqp-listen", f"127.0.0.1:{self.ports['amqp']}",
                "--mqtt-ws-listen", f"127.0.0.1:{self.ports['mqtt_ws']}",
                "--cluster-listen", f"127.0.0.1:{self.ports['cluster']}",
                "--stomp-listen", "off", "--redis-listen", "off"]
        env = {k: v for k, v in os.environ.items()
               if k not in ("FERRY_CONTROLLER_QUORUM", "FERRY_CLUSTER_LISTEN", "FERRY_NODE_ID")}
        env["FERRY_LOG"] = "warn"
        self.log = open(os.path.join(os.path.dirname(self.data), f"node{self.id}.log"), "ab")
        self.proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=self.log, env=env)

    def kill9(self):
        if self.proc:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(timeout=30)
            self.proc = None

    def stop(self):
        if self.proc:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=30)
            self.proc = None

    def amqp(self):
        return pika.ConnectionParameters("127.0.0.1", self.ports["amqp"], connection_attempts=1,
                                         blocked_connection_timeout=60)


def eventually(what, check, within=60):
    deadline = time.time() + within
    while True:
        try:
            got = check()
            if got:
                return got
        except Exception:  # noqa: BLE001 - retried until the deadline
            pass
        if time.time() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.3)


def listening(port):
    with socket.socket() as s:
        s.settimeout(1)
        return s.connect_ex(("127.0.0.1", port)) == 0


def metadata(node):
    # Only once the port listens: librdkafka logs every refused connection.
    if not listening(node.ports["kafka"]):
        return None
    return AdminClient({"bootstrap.servers": f"127.0.0.1:{node.ports['kafka']}"}).list_topics(timeout=5)


def queue_leaders(node):
    """Leaders of the quorum queues' partitions, by topic, as `node` answers Metadata."""
    md = metadata(node)
    return {name: t.partitions[0].leader for name, t in md.topics.items() if name.startswith("__amqp_queue.")}


def queue_leader(node):
    """The leader of the only quorum queue's partition."""
    leaders = list(queue_leaders(node).values())
    return leaders[0] if len(leaders) == 1 and leaders[0] >= 0 else None


SEED = open(os.path.join(os.path.dirname(os.path.abspath(__file__)), "pika_seed_test.py"), encoding="utf-8").read()
SEED = SEED[SEED.index("# --- the seed, verbatim"):SEED.index("# --- end of the seed")]


def run_seed(node):
    """The seed's program, unmodified, connecting to 'localhost' on `node`'s AMQP port."""
    pika.ConnectionParameters.DEFAULT_PORT = node.ports["amqp"]
    exec(compile(SEED, "seed", "exec"), {})  # noqa: S102 - the seed's own text


def main():
    root = tempfile.mkdtemp(prefix="ferry-pika-cluster-")
    nodes = {i: Node(i, root) for i in (1, 2, 3)}
    quorum = ",".join(f"{i}@127.0.0.1:{n.ports['cluster']}" for i, n in nodes.items())
    try:
        for n in nodes.values():
            n.start(quorum)
        for n in nodes.values():
            eventually(f"node {n.id} with 3 brokers", lambda n=n: len(metadata(n).brokers) == 3)

        def declare(node):
            conn = pika.BlockingConnection(node.amqp())
            ch = conn.channel()
            ch.queue_declare(queue=QUEUE, durable=True, arguments={"x-queue-type": "quorum"})
            conn.close()
            return True

        eventually("the quorum queue declared through node 1", lambda: declare(nodes[1]))
        leader = eventually("the queue's leader", lambda: queue_leader(nodes[1]))
        others = [i for i in nodes if i != leader]
        pub_node, con_node = nodes[others[0]], nodes[others[1]]

        # Publisher: confirms; basic_publish raises if nacked.
        pconn = pika.BlockingConnection(pub_node.amqp())
        pch = pconn.channel()
        pch.confirm_delivery()
        pch.queue_declare(queue=QUEUE, durable=True, arguments={"x-queue-type": "quorum"})
        confirmed = []

        def publish(bodies):
            for b in bodies:
                pch.basic_publish(exchange="", routing_key=QUEUE, body=b.encode(),
                                  properties=pika.BasicProperties(delivery_mode=2), mandatory=True)
                confirmed.append(b)

        # Worker: prefetch 2 (one slot for the redelivery of the held one).
        cconn = pika.BlockingConnection(con_node.amqp())
        cch = cconn.channel()
        cch.basic_qos(prefetch_count=2)
        deliveries = cch.consume(QUEUE, inactivity_timeout=60)

        def next_delivery():
            method, props, body = next(deliveries)
            assert method is not None, "no delivery within 60 s"
            return method, body.decode()

        # 21 messages, all delivered: 20 acknowledged, 1 held at the kill.
        publish([f"before-{i}" for i in range(21)])
        acked, held = set(), None
        for _ in range(21):
            method, body = next_delivery()
            assert body not in acked, f"{body} was acknowledged and came back"
            if len(acked) < 20:
                cch.basic_ack(method.delivery_tag)
                acked.add(body)
            else:
                held = (method, body)
        print(f"killing node {leader}, the queue's leader", flush=True)
        nodes[leader].kill9()
        started = time.time()
        # Confirms through the surviving node wait for the next leader.
        publish([f"after-{i}" for i in range(30)])
        print(f"published through node {pub_node.id} {time.time() - started:.1f} s after the kill", flush=True)
        expected = set(confirmed) - acked
        seen, redelivered_held = set(), False
        while seen != expected:
            method, body = next_delivery()
            assert body not in acked, f"{body} was acknowledged and came back"
            assert body in expected, f"{body} was never confirmed"
            if body == held[1]:
                assert method.redelivered, f"{body} was out at the kill: it must come back flagged"
                redelivered_held = True
            cch.basic_ack(method.delivery_tag)
            acked.add(body)
            seen.add(body)
        # The held delivery's old tag: acknowledging it again changes nothing.
        cch.basic_ack(held[0].delivery_tag)
        assert redelivered_held
        cch.cancel()
        cconn.close()
        pconn.close()
        print(f"pika cluster: {len(confirmed)} confirmed, all delivered, "
              f"consumer gap {time.time() - started:.1f} s", flush=True)

        # The seed's task queue, with the killed node back.
        nodes[leader].start(quorum)
        for n in nodes.values():
            eventually(f"node {n.id} with 3 brokers again", lambda n=n: len(metadata(n).brokers) == 3)
        before = set(queue_leaders(nodes[others[0]]))
        conn = pika.BlockingConnection(nodes[others[0]].amqp())
        conn.channel().queue_declare(queue="task_queue", durable=True, arguments={"x-queue-type": "quorum"})
        conn.close()
        topic = eventually("task_queue's partition", lambda: (set(queue_leaders(nodes[others[0]])) - before or {None}).pop())
        seed_leader = eventually("task_queue's leader", lambda: queue_leaders(nodes[others[0]]).get(topic, -1) >= 0
                                 and queue_leaders(nodes[others[0]])[topic])
        rest = [i for i in nodes if i != seed_leader]
        via, worker_node = nodes[rest[0]], nodes[rest[1]]
        run_seed(via)
        print(f"seed ran through node {via.id}; killing node {seed_leader}, task_queue's leader", flush=True)
        nodes[seed_leader].kill9()
        run_seed(via)
        wconn = pika.BlockingConnection(worker_node.amqp())
        wch = wconn.channel()
        wch.basic_qos(prefetch_count=1)
        got = []
        for method, _props, body in wch.consume("task_queue", inactivity_timeout=60):
            assert method is not None, f"the seed's messages within 60 s (got {got})"
            got.append(body)
            wch.basic_ack(method.delivery_tag)
            if len(got) == 2:
                break
        assert got == [b"Hello World", b"Hello World"], got
        wch.cancel()
        wconn.close()
        print(f"seed: both messages delivered through node {worker_node.id}", flush=True)
    finally:
        for n in nodes.values():
            n.stop()
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
    sys.exit(0)
