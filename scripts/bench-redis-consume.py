"""Consuming side of scripts/bench-redis.sh: preloads a stream, then
WORKERS processes each loop XREADGROUP COUNT BATCH > and XACK of the ids
read, until the group has read ENTRIES entries. Prints entries per second
(reading and acknowledging), the same driver for every server, and with
--pid the server's CPU seconds (user + system, all threads, from
/proc/PID/stat) over the consuming part alone.
"""

import argparse
import multiprocessing
import os
import time

import redis


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--entries", type=int, default=50000)
    p.add_argument("--workers", type=int, default=4)
    p.add_argument("--batch", type=int, default=100)
    p.add_argument("--pid", type=int, default=0)
    a = p.parse_args()
    r = redis.Redis(port=a.port)
    r.xgroup_create("bench-consume", "bench", id="0", mkstream=True)
    pipe = r.pipeline(transaction=False)
    for i in range(a.entries):
        pipe.xadd("bench-consume", {"field": "0123456789abcdef0123456789abcdef"})
        if i % 1000 == 999:
            pipe.execute()
    pipe.execute()
    acked = multiprocessing.Value("q", 0)
    procs = [multiprocessing.Process(target=run, args=(a.port, a.batch, "w%d" % i, acked, a.entries))
             for i in range(a.workers)]
    cpu_before = cpu_seconds(a.pid)
    start = time.monotonic()
    for proc in procs:
        proc.start()
    for proc in procs:
        proc.join(600)
    elapsed = time.monotonic() - start
    cpu = cpu_seconds(a.pid) - cpu_before
    assert acked.value == a.entries, (acked.value, a.entries)
    assert r.xpending("bench-consume", "bench")["pending"] == 0
    print("%.0f %.3f" % (a.entries / elapsed, cpu))


def cpu_seconds(pid):
    """User + system CPU seconds of process `pid` so far (0 without one)."""
    if not pid:
        return 0.0
    with open("/proc/%d/stat" % pid) as f:
        fields = f.read().rsplit(") ", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def run(port, batch, name, acked, total):
    r = redis.Redis(port=port)
    while True:
        with acked.get_lock():
            if acked.value >= total:
                return
        got = r.xreadgroup("bench", name, {"bench-consume": ">"}, count=batch, block=100)
        if not got or not got[0][1]:
            continue
        ids = [e[0] for e in got[0][1]]
        r.xack("bench-consume", "bench", *ids)
        with acked.get_lock():
            acked.value += len(ids)


if __name__ == "__main__":
    main()
