"""Writes seeds/packet/*: client byte streams (CONNECT first) for both fuzz targets."""
import os
import struct

here = os.path.dirname(os.path.abspath(__file__))
out = os.path.join(here, "seeds", "packet")


def varint(n):
    b = bytearray()
    while True:
        d, n = n % 128, n // 128
        b.append(d | (0x80 if n else 0))
        if not n:
            return bytes(b)


def s(x):
    x = x.encode() if isinstance(x, str) else x
    return struct.pack(">H", len(x)) + x


def pkt(first, body):
    return bytes([first]) + varint(len(body)) + body


def props(*items):
    body = b"".join(items)
    return varint(len(body)) + body


def connect(level, cid, flags=0x02, ka=30, prop=b"", will=b"", user=None, password=None):
    body = s("MQTT") + bytes([level, flags]) + struct.pack(">H", ka)
    if level == 5:
        body += prop or props()
    body += s(cid) + will
    if user is not None:
        body += s(user)
    if password is not None:
        body += s(password)
    return pkt(0x10, body)


def subscribe(level, pid, *filters, subid=None):
    body = struct.pack(">H", pid)
    if level == 5:
        body += props(b"\x0b" + varint(subid)) if subid else props()
    for f, o in filters:
        body += s(f) + bytes([o])
    return pkt(0x82, body)


def publish(level, topic, qos, pid=1, payload=b"x", retain=False, dup=False, prop=b""):
    body = s(topic)
    if qos:
        body += struct.pack(">H", pid)
    if level == 5:
        body += prop or props()
    return pkt(0x30 | (qos << 1) | (1 if retain else 0) | (8 if dup else 0), body + payload)


def unsubscribe(level, pid, *filters):
    body = struct.pack(">H", pid) + (props() if level == 5 else b"")
    return pkt(0xA2, body + b"".join(s(f) for f in filters))


pubrel = lambda pid: pkt(0x62, struct.pack(">H", pid))
puback = lambda pid: pkt(0x40, struct.pack(">H", pid))
PING, DISCONNECT = b"\xc0\x00", b"\xe0\x00"

seeds = {
    "v3-basic": connect(4, "a") + subscribe(4, 1, ("a/#", 2), ("+/b", 1)) + publish(4, "a/b", 0)
    + publish(4, "a/b", 1, 2) + publish(4, "a/c", 2, 3) + pubrel(3) + PING + unsubscribe(4, 4, "a/#") + DISCONNECT,
    "v3-retained-will": connect(4, "w", flags=0x2e | 0xc0, will=s("will/t") + s("bye"), user="u", password="p")
    + publish(4, "r/1", 1, 1, b"keep", retain=True) + publish(4, "r/1", 1, 2, b"", retain=True)
    + subscribe(4, 3, ("r/#", 1)) + puback(1),
    "v3-persistent": connect(4, "p", flags=0x00) + subscribe(4, 1, ("$SYS/#", 0), ("#", 1))
    + publish(4, "$SYS/x", 1, 5, dup=True) + publish(4, "q", 2, 6) + publish(4, "q", 2, 6, dup=True) + pubrel(6),
    "v31-mqisdp": pkt(0x10, s("MQIsdp") + bytes([3, 0x02]) + struct.pack(">H", 10) + s("old")) + PING,
    "v5-props": connect(5, "five", prop=props(b"\x11" + struct.pack(">I", 60), b"\x21" + struct.pack(">H", 10),
                                               b"\x22" + struct.pack(">H", 5)))
    + subscribe(5, 1, ("req/#", 0x01 | 0x04 | 0x08), ("$share/g/jobs/+", 1), subid=7)
    + publish(5, "req/x", 1, 2, prop=props(b"\x02" + struct.pack(">I", 30), b"\x08" + s("resp/x"),
                                           b"\x09" + s(b"corr"), b"\x26" + s("k") + s("v"), b"\x23\x00\x01"))
    + publish(5, "", 1, 3, prop=props(b"\x23\x00\x01")) + publish(5, "req/y", 2, 4) + pubrel(4)
    + unsubscribe(5, 5, "req/#") + pkt(0xE0, b"\x04" + props(b"\x11" + struct.pack(">I", 0))),
    "v5-retain-handling": connect(5, "rh") + publish(5, "k/a", 1, 1, retain=True)
    + subscribe(5, 2, ("k/#", 0x01 | 0x10)) + subscribe(5, 3, ("k/+", 0x01 | 0x20)) + PING + DISCONNECT,
    "v5-will-delay": connect(5, "wd", flags=0x0e | 0x20, prop=props(b"\x11" + struct.pack(">I", 100)),
                             will=props(b"\x18" + struct.pack(">I", 5)) + s("w/t") + s("gone")),
}

os.makedirs(out, exist_ok=True)
for name, data in seeds.items():
    with open(os.path.join(out, name), "wb") as f:
        f.write(data)
print(f"{len(seeds)} seeds in {out}")
