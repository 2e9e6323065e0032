"""redis-py (PyPI redis) against Ferry's Redis listener, with confluent-kafka
and pika on the other side for the cross-protocol cases.

Env: REDIS_PORT, AMQP_PORT, BOOTSTRAP. Every wait is bounded; exits non-zero
on the first failure.
"""

import os
import socket
import threading
import time
import uuid

import pika
import redis
from confluent_kafka import Consumer, TopicPartition

HOST = "127.0.0.1"
REDIS_PORT = int(os.environ["REDIS_PORT"])
AMQP_PORT = int(os.environ["AMQP_PORT"])
BOOTSTRAP = os.environ["BOOTSTRAP"]
WAIT = 10.0


def client(protocol=2):
    return redis.Redis(host=HOST, port=REDIS_PORT, protocol=protocol, socket_timeout=WAIT * 2)


def name(prefix):
    return "%s-%s" % (prefix, uuid.uuid4().hex[:8])


def worker_pattern():
    """Two workers share a group; one dies holding entries, the other
    takes them over with XAUTOCLAIM and acknowledges everything."""
    r = client()
    stream, group = name("jobs"), "workers"
    r.xgroup_create(stream, group, id="$", mkstream=True)
    ids = [r.xadd(stream, {"job": str(i)}) for i in range(6)]
    dead = client()
    got = dead.xreadgroup(group, "dead", {stream: ">"}, count=3)
    assert [e[0] for e in got[0][1]] == ids[:3], got
    dead.close()  # the worker dies without XACK
    alive = client()
    got = alive.xreadgroup(group, "alive", {stream: ">"}, count=10, block=1000)
    mine = [e[0] for e in got[0][1]]
    assert mine == ids[3:], got
    assert alive.xack(stream, group, *mine) == 3
    pending = alive.xpending(stream, group)
    assert pending["pending"] == 3 and pending["consumers"] == [{"name": b"dead", "pending": 3}], pending
    nxt, claimed, deleted = alive.xautoclaim(stream, group, "alive", min_idle_time=0, start_id="0-0", count=10)
    assert [e[0] for e in claimed] == ids[:3] and deleted == [] and nxt == b"0-0", (nxt, claimed, deleted)
    assert alive.xack(stream, group, *ids[:3]) == 3
    assert alive.xpending(stream, group)["pending"] == 0
    info = alive.xinfo_groups(stream)
    assert info[0]["name"] == group.encode() and info[0]["pending"] == 0, info
    assert alive.xlen(stream) == 6
    assert [e[0] for e in alive.xrange(stream, count=2)] == ids[:2]
    assert [e[0] for e in alive.xrevrange(stream, count=1)] == ids[-1:]


def blocking_pops():
    """BRPOP and XREAD BLOCK wake when another client adds."""
    lst, stream = name("tasks"), name("feed")
    results = {}

    def brpop():
        results["brpop"] = client().brpop([lst], timeout=WAIT)

    def xread():
        results["xread"] = client().xread({stream: "$"}, block=int(WAIT * 1000))

    r = client()
    r.xadd(stream, {"warm": "up"})
    threads = [threading.Thread(target=brpop), threading.Thread(target=xread)]
    for t in threads:
        t.start()
    time.sleep(0.5)
    assert all(t.is_alive() for t in threads), "both wait"
    r.lpush(lst, "t1")
    new_id = r.xadd(stream, {"x": "1"})
    for t in threads:
        t.join(WAIT + 5)
    assert results["brpop"] == (lst.encode(), b"t1"), results
    assert results["xread"][0][1][0][0] == new_id, results
    assert client().brpop([lst], timeout=0.1) is None, "timeout answers nil"


def pub_sub():
    r = client()
    p = r.pubsub()
    p.subscribe("news")
    p.psubscribe("sport.*")
    for _ in range(2):
        assert p.get_message(timeout=WAIT)["type"] in ("subscribe", "psubscribe")
    assert r.publish("news", "hello") == 1
    assert r.publish("sport.golf", "birdie") == 1
    assert r.publish("weather", "sun") == 0
    m = p.get_message(timeout=WAIT)
    assert (m["type"], m["channel"], m["data"]) == ("message", b"news", b"hello"), m
    m = p.get_message(timeout=WAIT)
    assert (m["type"], m["pattern"], m["channel"]) == ("pmessage", b"sport.*", b"sport.golf"), m
    p.close()


def resp3():
    r = client(protocol=3)
    assert r.ping()
    stream = name("r3")
    r.xadd(stream, {"a": "1"})
    got = r.xread({stream: "0"})
    # RESP3 answers XREAD with a map keyed by stream.
    assert isinstance(got, dict) and list(got.keys()) == [stream.encode()], got
    info = r.xinfo_stream(stream)
    assert info["length"] == 1, info
    seen = []
    p = r.pubsub()
    p.subscribe(**{"chan3": lambda m: seen.append(m["data"])})
    deadline = time.time() + WAIT
    while time.time() < deadline and not seen:
        client().publish("chan3", "pushed")
        p.get_message(timeout=0.2)
    assert seen == [b"pushed"] or b"pushed" in seen, seen
    p.close()


def cross_protocol():
    """XADD read by a Kafka consumer; RPUSH read by an AMQP consumer."""
    r = client()
    stream, lst = name("orders"), name("mailbox")
    r.xadd(stream, {"sku": "A-1"})
    c = Consumer({"bootstrap.servers": BOOTSTRAP, "group.id": name("g"), "enable.auto.commit": False})
    c.assign([TopicPartition(stream, 0, 0)])
    m = None
    deadline = time.time() + WAIT * 2
    while m is None and time.time() < deadline:
        m = c.poll(0.5)
    c.close()
    assert m is not None and m.error() is None and b'"sku":"A-1"' in m.value(), m
    headers = dict(m.headers() or [])
    assert headers.get("sku") == b"A-1", headers
    r.rpush(lst, "for-amqp")
    conn = pika.BlockingConnection(pika.ConnectionParameters(HOST, AMQP_PORT))
    ch = conn.channel()
    method, props, body = None, None, None
    deadline = time.time() + WAIT
    while method is None and time.time() < deadline:
        method, props, body = ch.basic_get(lst, auto_ack=True)
    assert body == b"for-amqp" and props.delivery_mode == 2, (method, props, body)
    conn.close()


def bad_input():
    """Garbage, huge lengths and unknown commands: an error for that
    client; others go on."""
    healthy = client()
    for payload in [b"*abc\r\n", b"*1\r\n$99999999999\r\n", b"*2\r\n$4\r\nECHO\r\n:5\r\n"]:
        s = socket.create_connection((HOST, REDIS_PORT), timeout=WAIT)
        s.sendall(payload)
        data = b""
        while True:
            chunk = s.recv(4096)
            if not chunk:
                break
            data += chunk
        s.close()
        assert data.startswith(b"-ERR Protocol error"), (payload, data)
    try:
        healthy.execute_command("FLUSHALL")
        raise AssertionError("unknown command accepted")
    except redis.ResponseError as e:
        assert "unknown command" in str(e), e
    assert healthy.ping()


def main():
    for test in [worker_pattern, blocking_pops, pub_sub, resp3, cross_protocol, bad_input]:
        print("redis_py:", test.__name__, flush=True)
        test()
    print("redis_py: ok")


if __name__ == "__main__":
    main()
