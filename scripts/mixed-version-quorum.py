"""Mixed versions on the cluster port (issue #17, e2-rep): a 3-node cluster
where one node runs an OLD ferry binary and two a NEW one, once with the
old binary on each node. Through the node that is not the queue's leader,
pika publishes 2,000 persistent messages with confirms to a quorum queue
(a confirm needs the followers' acknowledged ends, so each needs
replication between the versions), then the queue's leader is killed -9
and every confirmed message must be consumed from a survivor.

Usage: mixed-version-quorum.py OLD_BIN NEW_BIN (the interop venv's python).
"""
import importlib
import os
import shutil
import sys
import tempfile
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "interop"))
interop = importlib.import_module("pika_cluster_test")
import pika  # noqa: E402

N = 2000


def run(old_bin, new_bin, old_node):
    root = tempfile.mkdtemp(prefix="ferry-mixed-")
    nodes = {i: interop.Node(i, root) for i in (1, 2, 3)}
    quorum = ",".join(f"{i}@127.0.0.1:{n.ports['cluster']}" for i, n in nodes.items())
    try:
        for i, n in nodes.items():
            interop.FERRY = old_bin if i == old_node else new_bin
            n.start(quorum)
        for n in nodes.values():
            interop.eventually(f"node {n.id} with 3 brokers", lambda n=n: len(interop.metadata(n).brokers) == 3)

        def declare(node):
            conn = pika.BlockingConnection(node.amqp())
            conn.channel().queue_declare(queue="mixed", durable=True, arguments={"x-queue-type": "quorum"})
            conn.close()
            return True

        interop.eventually("the quorum queue declared", lambda: declare(nodes[1]))
        leader = interop.eventually("the queue's leader", lambda: interop.queue_leader(nodes[1]))
        survivor = nodes[next(i for i in nodes if i != leader)]
        conn = pika.BlockingConnection(survivor.amqp())
        ch = conn.channel()
        ch.confirm_delivery()
        started = time.time()
        for i in range(N):
            ch.basic_publish(exchange="", routing_key="mixed", body=f"m-{i}".encode(),
                             properties=pika.BasicProperties(delivery_mode=2), mandatory=True)
        rate = N / (time.time() - started)
        conn.close()
        nodes[leader].kill9()
        got = set()
        conn = pika.BlockingConnection(survivor.amqp())
        ch = conn.channel()
        for method, _, body in ch.consume("mixed", inactivity_timeout=30):
            if method is None:
                break
            got.add(body.decode())
            ch.basic_ack(method.delivery_tag)
            if len(got) == N:
                break
        conn.close()
        missing = N - len(got & {f"m-{i}" for i in range(N)})
        role = "leader" if leader == old_node else "follower"
        print(f"old binary on node {old_node} (the queue's {role}): {N} confirmed one at a time "
              f"({rate:.0f} msg/s), leader {leader} killed, {len(got)} consumed, {missing} missing", flush=True)
        assert missing == 0, f"{missing} confirmed messages lost"
        return role
    finally:
        for n in nodes.values():
            n.stop()
        shutil.rmtree(root, ignore_errors=True)


def main():
    old_bin, new_bin = sys.argv[1], sys.argv[2]
    roles = {run(old_bin, new_bin, old) for old in (1, 2, 3)}
    print(f"the old binary served as: {sorted(roles)}")


if __name__ == "__main__":
    main()
