#!/usr/bin/env python3
"""Where an MQTT QoS 1 message's time goes inside the broker, from `perf
script` output of syscall tracepoints (scripts/mqtt-stages.sh records them):
for every PUBLISH the broker reads from the publisher's socket, the time to
the PUBACK's send on that socket and to the delivery's send on the
subscriber's socket (the one the end-to-end latency waits for), and which
of the two went first.

Sockets are told apart by what goes through them: the publisher's brings
PUBLISHes in (reads of more than 4 bytes) and takes PUBACKs out (4-byte
sends); the subscriber's the other way round.

usage: mqtt-stages.py PERF_SCRIPT_TXT BROKER_PID
"""
import bisect
import collections
import re
import sys

LINE = re.compile(r"^\s*(.+?)\s+(\d+)/(\d+)\s+\[(\d+)\]\s+([\d.]+):\s+(\S+):\s*(.*)$")
READS = {"recvfrom", "read", "recvmsg"}
SENDS = {"sendto", "write", "sendmsg", "writev"}


def parse(path, broker):
    open_calls = {}
    reads = collections.defaultdict(list)  # fd -> (exit time, bytes)
    sends = collections.defaultdict(list)  # fd -> (enter time, bytes)
    for line in open(path):
        m = LINE.match(line)
        if not m:
            continue
        _comm, pid, tid, _cpu, t, ev, rest = m.groups()
        if pid != broker:
            continue
        t = float(t)
        name = ev.split("sys_")[-1]
        if name.startswith("enter_"):
            fd = re.search(r"fd: (0x[0-9a-f]+)", rest)
            open_calls[tid] = (name[6:], t, int(fd.group(1), 16) if fd else None)
        elif name.startswith("exit_"):
            o = open_calls.pop(tid, None)
            if not o or o[0] != name[5:] or o[2] is None:
                continue
            words = rest.split()
            ret = int(words[-1], 16) if words else 0
            if ret >= 1 << 63:
                ret -= 1 << 64
            if ret <= 0:
                continue
            if o[0] in READS:
                reads[o[2]].append((t, ret))
            elif o[0] in SENDS:
                sends[o[2]].append((o[1], ret))
    return reads, sends


def pct(v, p):
    return v[min(len(v) - 1, int(len(v) * p))] if v else float("nan")


def show(name, v):
    v = sorted(x * 1e3 for x in v)
    print(f"  {name:<44} n {len(v):>6}  p50 {pct(v, .5):.3f}  p90 {pct(v, .9):.3f}  "
          f"p99 {pct(v, .99):.3f}  ms")


def main():
    path, broker = sys.argv[1], sys.argv[2]
    reads, sends = parse(path, broker)
    # The publisher's socket: most reads of more than 4 bytes; the
    # subscriber's: most sends of more than 4 bytes.
    pub = max(reads, key=lambda fd: sum(1 for _, n in reads[fd] if n > 4), default=None)
    sub = max(sends, key=lambda fd: sum(1 for _, n in sends[fd] if n > 4), default=None)
    if pub is None or sub is None or pub == sub:
        print("  publisher and subscriber sockets not found")
        return
    acks = [t for t, n in sends.get(pub, []) if n < 64]
    dels = [t for t, n in sends.get(sub, []) if n > 4]
    to_ack, to_del, ack_first, gap = [], [], 0, []
    for t, n in reads[pub]:
        if n <= 4:
            continue
        i = bisect.bisect_left(acks, t)
        j = bisect.bisect_left(dels, t)
        if i == len(acks) or j == len(dels):
            continue
        a, d = acks[i] - t, dels[j] - t
        if a > 0.01 or d > 0.01:  # not this read's (a gap in the trace)
            continue
        to_ack.append(a)
        to_del.append(d)
        if a < d:
            ack_first += 1
            gap.append(d - a)
    print(f"  publisher fd {pub}, subscriber fd {sub}")
    show("read PUBLISH -> send PUBACK", to_ack)
    show("read PUBLISH -> send delivery", to_del)
    show("PUBACK sent first: its send -> delivery", gap)
    print(f"  PUBACK before the delivery: {ack_first} of {len(to_del)}")


if __name__ == "__main__":
    main()
