#!/usr/bin/env python3
"""The raw reference of scripts/bench-topics.sh: what a broker's segment
writes cost the kernel here, without a broker. One thread appends CHUNK
bytes at a time to one file (O_APPEND, as a segment), another fdatasyncs it
whenever it has unsynced data (a group-commit flusher); the file rolls to a
new one every SEGMENT MiB. Prints MB/s and this process's user and system
CPU per MiB, on one line:

  raw: 512.3 MB/s, user 0.05 ms/MiB, system 1.20 ms/MiB, 1234 fdatasyncs

usage: python3 scripts/raw-segment-writer.py DIR MIB [CHUNK_KIB] [SEGMENT_MIB]
"""
import os
import sys
import threading
import time

DIR, MIB = sys.argv[1], int(sys.argv[2])
CHUNK = (int(sys.argv[3]) if len(sys.argv) > 3 else 512) * 1024
SEGMENT = (int(sys.argv[4]) if len(sys.argv) > 4 else 1024) << 20
BUF = os.urandom(CHUNK)


def main():
    total = MIB << 20
    lock = threading.Condition()
    state = {"fd": None, "written": 0, "synced": 0, "done": False, "syncs": 0, "old": []}

    def open_segment(n):
        return os.open(os.path.join(DIR, f"{n:020}.log"), os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_APPEND, 0o644)

    def syncer():
        while True:
            with lock:
                while state["written"] == state["synced"] and not state["done"]:
                    lock.wait()
                if state["written"] == state["synced"] and state["done"]:
                    return
                fd, target, old = state["fd"], state["written"], state["old"]
                state["old"] = []
            for o in old:  # rolled segments: synced once more, then closed
                os.fdatasync(o)
                os.close(o)
            os.fdatasync(fd)
            with lock:
                state["synced"] = target
                state["syncs"] += 1

    t0 = os.times()
    start = time.monotonic()
    state["fd"] = open_segment(0)
    flusher = threading.Thread(target=syncer)
    flusher.start()
    written, in_segment = 0, 0
    while written < total:
        if in_segment + CHUNK > SEGMENT:
            fd = open_segment(written)
            with lock:
                state["old"].append(state["fd"])
                state["fd"] = fd
            in_segment = 0
        os.write(state["fd"], BUF)
        written += CHUNK
        in_segment += CHUNK
        with lock:
            state["written"] = written
            lock.notify()
    with lock:
        state["done"] = True
        lock.notify()
    flusher.join()
    os.fdatasync(state["fd"])
    os.close(state["fd"])
    secs = time.monotonic() - start
    t1 = os.times()
    mib = written / (1 << 20)
    print(
        f"raw: {written / secs / 1e6:.1f} MB/s, user {(t1.user - t0.user) * 1000 / mib:.2f} ms/MiB, "
        f"system {(t1.system - t0.system) * 1000 / mib:.2f} ms/MiB, {state['syncs']} fdatasyncs"
    )


main()
