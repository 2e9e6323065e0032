#!/usr/bin/env python3
"""What one fdatasync costs at a low rate, by how the file takes the write:
1 KiB written then fdatasynced 1,000 times a second, into
  growing   - a file that grows with each write (as a plain append),
  zeroed    - a file whose blocks were written (zeros) and fsynced before,
              overwritten in place (Ferry's zeros ahead, ferry-log
              zero_ahead.rs),
  fallocate - a file preallocated with fallocate (unwritten extents).
Only the write + fdatasync is timed. Rounds alternate the three cases so a
noisy machine weighs on each alike (docs/benchmarks.md, "Issue #21 part 3:
the fsynced path").

usage: python3 scripts/fsync-growth.py [DIR] [SECONDS_PER_CASE] [ROUNDS]
"""
import os
import sys
import time

DIR = sys.argv[1] if len(sys.argv) > 1 else "."
SECS = float(sys.argv[2]) if len(sys.argv) > 2 else 3.0
ROUNDS = int(sys.argv[3]) if len(sys.argv) > 3 else 3
RATE = 1000
AREA = 32 << 20


def run(mode):
    path = os.path.join(DIR, "fsync-growth-%s-%d.tmp" % (mode, os.getpid()))
    fd = os.open(path, os.O_CREAT | os.O_RDWR | os.O_TRUNC, 0o644)
    try:
        if mode == "zeroed":
            zeros = b"\0" * (1 << 20)
            for _ in range(AREA >> 20):
                os.write(fd, zeros)
            os.fsync(fd)
        elif mode == "fallocate":
            os.posix_fallocate(fd, 0, AREA)
            os.fsync(fd)
        buf = b"x" * 1024
        lat = []
        t0 = time.perf_counter()
        for i in range(int(SECS * RATE)):
            wait = t0 + i / RATE - time.perf_counter()
            if wait > 0:
                time.sleep(wait)
            a = time.perf_counter()
            os.pwrite(fd, buf, i * 1024)
            os.fdatasync(fd)
            lat.append(time.perf_counter() - a)
        return lat
    finally:
        os.close(fd)
        os.unlink(path)


def main():
    res = {}
    for _ in range(ROUNDS):
        for mode in ("growing", "zeroed", "fallocate"):
            res.setdefault(mode, []).extend(run(mode))
    for mode, lat in res.items():
        lat.sort()
        q = lambda x: lat[min(len(lat) - 1, int(x * len(lat)))] * 1e3
        print("%-10s n %5d  write+fdatasync p50 %.3f p90 %.3f p99 %.3f p99.9 %.3f ms"
              % (mode, len(lat), q(0.5), q(0.9), q(0.99), q(0.999)))
    print("load", " ".join(open("/proc/loadavg").read().split()[:3]))


if __name__ == "__main__":
    main()
