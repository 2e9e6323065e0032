"""A/B of ferry binaries on a quorum queue's leader (issue #17): publish
with confirms, 1 KiB persistent messages, one pika SelectConnection on the
queue's leader keeping at most WINDOW (32) unconfirmed, as
bench-amqp-cluster.py measures it. The binaries take turns: in each of
`alternations`, each binary gets a fresh 3-node cluster, a warm-up and
`rounds` publishes of `messages`; so a machine whose load drifts (other
builds) weighs on every binary alike. Per binary: median and best msg/s,
the brokers' CPU per MiB of bodies (all three nodes) and the client's.
With PERF=1, each binary's last cluster also gets one publish of
`messages` under `perf stat` (tracepoints), printed per node as system
calls and context switches per message: what a change saved where.

Usage: ab-amqp-quorum.py BIN[,BIN...] [alternations] [messages] [rounds]
(defaults 3 10000 3). Needs the interop venv (pika, confluent-kafka).
Env: WINDOW (32), FORWARD=1 puts the client on a node that is not the
queue's leader (every publish forwarded over the cluster port).
"""
import importlib
import os
import runpy
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
bench = runpy.run_path(os.path.join(HERE, "bench-amqp-cluster.py"), run_name="bench")
interop = importlib.import_module("pika_cluster_test")
Node, eventually, metadata, queue_leaders = bench["Node"], bench["eventually"], bench["metadata"], bench["queue_leaders"]
declare, publish_windowed, purge, cpu_seconds = bench["declare"], bench["publish_windowed"], bench["purge"], bench["cpu_seconds"]
WINDOW = int(os.environ.get("WINDOW", "32"))
FORWARD = os.environ.get("FORWARD") == "1"
EVENTS = ["syscalls:sys_enter_fdatasync", "syscalls:sys_enter_writev", "syscalls:sys_enter_sendfile64",
          "syscalls:sys_enter_recvfrom", "syscalls:sys_enter_sendto", "syscalls:sys_enter_futex",
          "syscalls:sys_enter_epoll_wait", "syscalls:sys_enter_pread64", "sched:sched_switch"]


def per_message(nodes, leader, port, n):
    """System calls and context switches per message of each node during
    one publish of `n`, as lines to print."""
    perfs = {}
    for i, node in nodes.items():
        role = "leader" if i == leader else f"follower {i}"
        perfs[role] = subprocess.Popen(["perf", "stat", "-x", ",", "-e", ",".join(EVENTS), "-p", str(node.proc.pid)],
                                       stderr=subprocess.PIPE, text=True)
    time.sleep(0.5)
    publish_windowed(port, "bench-q", n, WINDOW)
    for p in perfs.values():
        p.send_signal(signal.SIGINT)
    lines = []
    for role, p in sorted(perfs.items()):
        _, err = p.communicate()
        counts = []
        for line in err.splitlines():
            f = line.split(",")
            if len(f) > 2 and f[0].strip().isdigit():
                counts.append(f"{f[2].split(':')[-1].replace('sys_enter_', '')} {int(f[0]) / n:.2f}")
        lines.append(f"    {role:10} per message: " + "  ".join(counts))
    purge(port, "bench-q")
    return lines


def one(binary, n, rounds, perf):
    """A fresh cluster of `binary`: (msg/s, broker ms/MiB, client ms/MiB)
    per round, and the per-message counts (`perf`)."""
    interop.FERRY = binary
    root = tempfile.mkdtemp(prefix="ferry-ab-quorum-")
    nodes = {i: Node(i, root) for i in (1, 2, 3)}
    quorum = ",".join(f"{i}@127.0.0.1:{node.ports['cluster']}" for i, node in nodes.items())
    try:
        for node in nodes.values():
            node.start(quorum)
        for node in nodes.values():
            eventually(f"node {node.id} with 3 brokers", lambda node=node: len(metadata(node).brokers) == 3)
        eventually("quorum queue declared", lambda: declare(nodes[1].ports["amqp"], "bench-q", "quorum") or True)
        leader = eventually("its leader", lambda: max(queue_leaders(nodes[1]).values(), default=-1) > 0
                            and max(queue_leaders(nodes[1]).values()))
        # FORWARD=1: the client on another node, which forwards to the leader.
        client = next(i for i in nodes if i != leader) if FORWARD else leader
        port = nodes[client].ports["amqp"]
        pids = [node.proc.pid for node in nodes.values()]
        publish_windowed(port, "bench-q", 1000, WINDOW)
        purge(port, "bench-q")
        mib = n * 1024 / 2**20
        out = []
        for _ in range(rounds):
            broker, client = cpu_seconds(pids), time.process_time()
            rate = publish_windowed(port, "bench-q", n, WINDOW)
            out.append((rate, (cpu_seconds(pids) - broker) * 1000 / mib, (time.process_time() - client) * 1000 / mib))
            purge(port, "bench-q")
        return out, per_message(nodes, leader, port, n) if perf else []
    finally:
        for node in nodes.values():
            node.stop()
        shutil.rmtree(root, ignore_errors=True)


def main():
    bins = sys.argv[1].split(",")
    alternations = int(sys.argv[2]) if len(sys.argv) > 2 else 3
    n = int(sys.argv[3]) if len(sys.argv) > 3 else 10000
    rounds = int(sys.argv[4]) if len(sys.argv) > 4 else 3
    perf = os.environ.get("PERF") == "1"
    results = {b: [] for b in bins}
    print(os.popen("uptime").read().strip(), flush=True)
    for a in range(alternations):
        for b in bins:
            got, counts = one(b, n, rounds, perf and a == alternations - 1)
            results[b].extend(got)
            print(f"  {a + 1}: {b}: " + "  ".join(f"{r:6.0f} msg/s ({c:5.1f} + {p:4.1f} ms/MiB)" for r, c, p in got),
                  flush=True)
            for line in counts:
                print(line, flush=True)
    print(os.popen("uptime").read().strip())
    where = "through another node (forwarded)" if FORWARD else "on the quorum queue's leader"
    print(f"publish with confirms {where}, 1 KiB persistent, {n} messages, "
          f"at most {WINDOW} unconfirmed, {alternations} x {rounds} runs:")
    for b in bins:
        rates = [r for r, _, _ in results[b]]
        print(f"  {b}: median {statistics.median(rates):6.0f} msg/s, best {max(rates):6.0f}, broker CPU "
              f"{statistics.median(c for _, c, _ in results[b]):5.1f} ms/MiB, client CPU "
              f"{statistics.median(p for _, _, p in results[b]):4.1f} ms/MiB")


if __name__ == "__main__":
    main()
