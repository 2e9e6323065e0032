#!/usr/bin/env python3
"""Per-record stages of Ferry's fsynced Kafka path, from `perf script`
output of syscall tracepoints (scripts/latency-stages.sh records them).

A record is followed by the segment file it was appended to: the append's
pwritev on a tokio worker, the first fdatasync of that file to start after
it (on a flusher thread), then the first fetch response (a send of more
than 1,000 bytes) after that fdatasync returned. Before the append: the
produce request's receive on the same worker; around the broker: the
bench's sendmsg of the produce request and recvmsg of the fetch response.
At 1,000 records/s into 6 partitions records rarely overlap, so the
matching is unambiguous for nearly all of them.

usage: latency-stages.py PERF_SCRIPT_TXT FERRY_PID [BENCH_PID]
"""
import bisect
import collections
import re
import sys

LINE = re.compile(r"^\s*(.+?)\s+(\d+)/(\d+)\s+\[(\d+)\]\s+([\d.]+):\s+(\S+):\s*(.*)$")


def parse(path, broker, bench):
    open_calls = {}
    calls = {broker: collections.defaultdict(list), bench: collections.defaultdict(list)}
    wakeups = collections.defaultdict(list)  # tid -> times woken
    switch_in = collections.defaultdict(list)  # tid -> times it started running
    for line in open(path):
        m = LINE.match(line)
        if not m:
            continue
        comm, pid, tid, _cpu, t, ev, rest = m.groups()
        t = float(t)
        if ev == "sched:sched_wakeup":
            wakeups[re.search(r"pid=(\d+)", rest).group(1)].append(t)
            continue
        if ev == "sched:sched_switch":
            switch_in[re.search(r"next_pid=(\d+)", rest).group(1)].append(t)
            continue
        if pid not in calls:
            continue
        name = ev.split("sys_")[-1]
        if name.startswith("enter_"):
            fd = re.search(r"fd: (0x[0-9a-f]+)", rest)
            open_calls[tid] = (name[6:], t, int(fd.group(1), 16) if fd else None)
        elif name.startswith("exit_"):
            o = open_calls.pop(tid, None)
            if not o or o[0] != name[5:]:
                continue
            words = rest.split()
            ret = int(words[-1], 16) if words else 0
            if ret >= 1 << 63:
                ret -= 1 << 64
            calls[pid][o[0]].append((o[1], t, tid, o[2], ret, comm))
    for c in calls.values():
        for v in c.values():
            v.sort()
    return calls[broker], calls[bench], wakeups, switch_in


def pct(v):
    v = sorted(v)
    if not v:
        return "n 0"
    q = lambda x: v[min(len(v) - 1, int(x * len(v)))] * 1e3
    return "n %5d  p50 %.3f  p90 %.3f  p99 %.3f  p99.9 %.3f  max %.3f" % (len(v), q(0.5), q(0.9), q(0.99), q(0.999), v[-1] * 1e3)


def main():
    path, broker = sys.argv[1], sys.argv[2]
    bench = sys.argv[3] if len(sys.argv) > 3 else "-"
    b, c, wakeups, switch_in = parse(path, broker, bench)
    fsyncs = b["fdatasync"]
    by_fd = collections.defaultdict(list)
    for f in fsyncs:
        by_fd[f[3]].append(f)
    starts = {fd: [f[0] for f in v] for fd, v in by_fd.items()}
    appends = [w for w in b["pwritev"] + b["writev"] if w[3] in by_fd and w[5].startswith("tokio")]
    sends = sorted(s for s in b["sendto"] + b["sendmsg"] if s[4] > 1000)
    send_t = [s[0] for s in sends]
    recvs = sorted((r for r in b["recvfrom"] + b["recvmsg"] if r[4] > 1000), key=lambda r: r[1])
    recv_t = [r[1] for r in recvs]
    csend = sorted(s for s in c["sendmsg"] + c["sendto"] if s[4] > 1000)
    csend_t = [s[0] for s in csend]
    crecv = sorted((r for r in c["recvmsg"] + c["recvfrom"] if r[4] > 1000), key=lambda r: r[1])
    crecv_t = [r[1] for r in crecv]
    stages = collections.OrderedDict((k, []) for k in (
        "bench send -> broker recv", "recv -> append", "append (pwritev)", "append -> fdatasync",
        "  of which flusher wake-up", "fdatasync", "fdatasync -> fetch send", "fetch send -> bench recv",
        "broker recv -> fetch send"))
    for w in appends:
        i = bisect.bisect_left(starts[w[3]], w[1])
        if i >= len(by_fd[w[3]]):
            continue
        f = by_fd[w[3]][i]
        j = bisect.bisect_left(send_t, f[1])
        k = bisect.bisect_right(recv_t, w[0]) - 1
        if j >= len(sends) or k < 0:
            continue
        s, r = sends[j], recvs[k]
        row = {"recv -> append": w[0] - r[1], "append (pwritev)": w[1] - w[0], "append -> fdatasync": f[0] - w[1],
               "fdatasync": f[1] - f[0], "fdatasync -> fetch send": s[0] - f[1], "broker recv -> fetch send": s[1] - r[1]}
        wk, sw = wakeups[f[2]], switch_in[f[2]]
        a, z = bisect.bisect_right(wk, f[0]) - 1, bisect.bisect_right(sw, f[0]) - 1
        if a >= 0 and z >= 0 and wk[a] > w[0] and sw[z] >= wk[a]:
            row["  of which flusher wake-up"] = sw[z] - wk[a]
        x, y = bisect.bisect_right(csend_t, r[1]) - 1, bisect.bisect_left(crecv_t, s[1])
        if x >= 0:
            row["bench send -> broker recv"] = r[1] - csend[x][0]
        if y < len(crecv):
            row["fetch send -> bench recv"] = crecv[y][1] - s[0]
        for key, v in row.items():
            stages[key].append(v)
    print("stage (ms)                    distribution over records")
    for key, v in stages.items():
        print("%-29s %s" % (key, pct(v)))


if __name__ == "__main__":
    main()
