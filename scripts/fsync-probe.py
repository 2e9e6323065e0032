#!/usr/bin/env python3
"""How this disk serves fdatasync: writers on one O_APPEND file, each
writing 16 KiB and syncing every K writes, for 3 s per case. Shows whether
concurrent fsyncs share device flushes (8 writers syncing each write vs one),
which bounds what group commit can gain (docs/benchmarks.md, "Group commit").

usage: python3 scripts/fsync-probe.py [DIR]   (default: the current directory)
"""
import os
import sys
import threading
import time

DIR = sys.argv[1] if len(sys.argv) > 1 else "."
PATH = os.path.join(DIR, "fsync-probe.tmp")
BUF = b"x" * 16384


def run(threads, per_sync, secs=3.0):
    fd = os.open(PATH, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_APPEND, 0o644)
    stop = time.time() + secs
    counts = [0] * threads

    def writer(i):
        while time.time() < stop:
            for _ in range(per_sync):
                os.write(fd, BUF)
            os.fdatasync(fd)
            counts[i] += per_sync

    workers = [threading.Thread(target=writer, args=(i,)) for i in range(threads)]
    start = time.time()
    for w in workers:
        w.start()
    for w in workers:
        w.join()
    elapsed = time.time() - start
    os.close(fd)
    os.unlink(PATH)
    return sum(counts) / elapsed


single = run(1, 1)
print(f"1 writer, fdatasync per write:   {single:8.0f} writes/s")
for threads, per_sync in [(8, 1), (1, 8), (2, 4)]:
    rate = run(threads, per_sync)
    print(f"{threads} writer(s), fdatasync every {per_sync}: {rate:8.0f} writes/s = {rate / single:4.2f}x")
