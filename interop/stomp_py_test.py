"""stomp.py (PyPI stomp-py) against Ferry's STOMP listener, and pika on the
AMQP side for the cross-protocol cases.

Env: STOMP_PORT, AMQP_PORT. Every wait is bounded; exits non-zero on the
first failure.
"""

import os
import queue
import sys
import time
import uuid

import pika
import stomp

HOST = "127.0.0.1"
STOMP_PORT = int(os.environ["STOMP_PORT"])
AMQP_PORT = int(os.environ["AMQP_PORT"])
WAIT = 10.0


class Collector(stomp.ConnectionListener):
    """Frames in arrival order, for bounded waits."""

    def __init__(self):
        self.frames = queue.Queue()
        self.kept = []
        self.heartbeats = 0

    def on_message(self, frame):
        self.frames.put(("MESSAGE", frame))

    def on_receipt(self, frame):
        self.frames.put(("RECEIPT", frame))

    def on_error(self, frame):
        self.frames.put(("ERROR", frame))

    def on_heartbeat(self):
        self.heartbeats += 1

    def _next(self):
        try:
            return self.frames.get(timeout=WAIT)
        except queue.Empty:
            raise AssertionError("no frame within %s s" % WAIT)

    def receipt(self, rid):
        while True:
            kind, f = self._next()
            if kind == "MESSAGE":
                self.kept.append(f)
                continue
            assert kind == "RECEIPT" and f.headers.get("receipt-id") == rid, (kind, f.headers, f.body)
            return

    def message(self):
        if self.kept:
            return self.kept.pop(0)
        kind, f = self._next()
        assert kind == "MESSAGE", (kind, f.headers, f.body)
        return f

    def nothing_pending(self):
        assert not self.kept and self.frames.empty(), self.kept or self.frames.queue


def connect(heartbeats=(0, 0), version=12):
    cls = {10: stomp.Connection10, 11: stomp.Connection11, 12: stomp.Connection12}[version]
    extra = {} if version == 10 else {"heartbeats": heartbeats}
    c = cls([(HOST, STOMP_PORT)], timeout=WAIT, **extra)
    col = Collector()
    c.set_listener("c", col)
    c.connect("guest", "guest", wait=True)
    return c, col


def subscribe(c, col, dest, sid, **headers):
    rid = "sub-" + uuid.uuid4().hex
    ack = headers.pop("ack", "auto")
    c.subscribe(destination=dest, id=sid, ack=ack, headers=dict(headers, receipt=rid))
    col.receipt(rid)


def send(c, col, dest, body, **headers):
    rid = "send-" + uuid.uuid4().hex
    c.send(destination=dest, body=body, headers=dict(headers, receipt=rid))
    col.receipt(rid)


def close(c):
    c.disconnect(receipt="bye-" + uuid.uuid4().hex)


def test_queue_send_receive_ack():
    c, col = connect()
    subscribe(c, col, "/queue/py-jobs", "1", ack="client-individual")
    send(c, col, "/queue/py-jobs", "hello", **{"content-type": "text/plain", "customer": "42"})
    m = col.message()
    assert m.body == "hello", m.body
    assert m.headers["content-type"].startswith("text/plain"), m.headers
    assert m.headers["customer"] == "42", m.headers
    c.ack(m.headers["ack"])
    close(c)


def test_nack_redelivers():
    c, col = connect()
    subscribe(c, col, "/queue/py-nack", "1", ack="client-individual")
    send(c, col, "/queue/py-nack", "again")
    m = col.message()
    assert m.headers["redelivered"] == "false", m.headers
    c.nack(m.headers["ack"])
    m = col.message()
    assert (m.body, m.headers["redelivered"]) == ("again", "true"), m.headers
    c.ack(m.headers["ack"])
    close(c)


def test_topic_fan_out():
    subs = [connect() for _ in range(2)]
    for c, col in subs:
        subscribe(c, col, "/topic/py.news.*", "t")
    p, pcol = connect()
    send(p, pcol, "/topic/py.news.eu", "extra")
    for c, col in subs:
        m = col.message()
        assert (m.body, m.headers["destination"]) == ("extra", "/topic/py.news.eu"), m.headers
        close(c)
    close(p)


def test_transactions():
    c, col = connect()
    subscribe(c, col, "/queue/py-tx", "1")
    tx = c.begin()
    c.send(destination="/queue/py-tx", body="inside", transaction=tx)
    send(c, col, "/queue/py-tx", "outside")
    assert col.message().body == "outside"
    rid = "commit-" + uuid.uuid4().hex
    c.commit(transaction=tx, headers={"receipt": rid})
    col.receipt(rid)
    assert col.message().body == "inside"
    tx = c.begin()
    c.send(destination="/queue/py-tx", body="aborted", transaction=tx)
    c.abort(transaction=tx)
    send(c, col, "/queue/py-tx", "after")
    assert col.message().body == "after"
    close(c)


def test_heartbeats():
    # The broker offers 10000,10000: both sides beat every 10 s. One beat
    # from the broker arrives, and the session stays up and working.
    c, col = connect(heartbeats=(1000, 1000))
    deadline = time.time() + 25
    while col.heartbeats < 1 and time.time() < deadline:
        time.sleep(0.05)
    assert col.heartbeats >= 1, "a heart-beat from the broker within 25 s"
    assert c.is_connected()
    subscribe(c, col, "/queue/py-hb", "1")
    send(c, col, "/queue/py-hb", "alive")
    assert col.message().body == "alive"
    close(c)


def test_durable_subscription():
    c, col = connect()
    subscribe(c, col, "/topic/py.prices", "dur-1", durable="true", ack="client-individual")
    close(c)
    p, pcol = connect()
    send(p, pcol, "/topic/py.prices", "while away", persistent="true")
    close(p)
    c, col = connect()
    subscribe(c, col, "/topic/py.prices", "dur-1", durable="true", ack="client-individual")
    m = col.message()
    assert m.body == "while away", m.body
    c.ack(m.headers["ack"])
    rid = "unsub-" + uuid.uuid4().hex
    c.unsubscribe(id="dur-1", headers={"durable": "true", "receipt": rid})
    col.receipt(rid)
    close(c)


def test_request_reply_with_temp_queue():
    server, scol = connect()
    subscribe(server, scol, "/queue/py-service", "s")
    client, ccol = connect()
    send(client, ccol, "/queue/py-service", "ping", **{"reply-to": "/temp-queue/answers"})
    req = scol.message()
    assert req.headers["reply-to"].startswith("/reply-queue/"), req.headers
    send(server, scol, req.headers["reply-to"], "pong")
    m = ccol.message()
    assert (m.body, m.headers["subscription"]) == ("pong", "/temp-queue/answers"), m.headers
    close(server)
    close(client)


def test_cross_protocol_with_pika():
    amqp = pika.BlockingConnection(pika.ConnectionParameters(HOST, AMQP_PORT))
    ch = amqp.channel()
    # STOMP SEND -> AMQP queue.
    c, col = connect()
    send(c, col, "/queue/py-cross", '{"id":1}', **{"content-type": "application/json", "persistent": "true", "k": "v"})
    method, props, body = None, None, None
    deadline = time.time() + WAIT
    while method is None and time.time() < deadline:
        method, props, body = ch.basic_get("py-cross", auto_ack=True)
    assert body == b'{"id":1}', body
    assert props.content_type == "application/json" and props.delivery_mode == 2, props
    assert props.headers.get("k") in ("v", b"v"), props.headers
    # AMQP publish to amq.topic -> STOMP /topic/ subscriber.
    subscribe(c, col, "/topic/py.orders.*", "o")
    ch.basic_publish("amq.topic", "py.orders.new", b"from pika",
                     pika.BasicProperties(content_type="text/plain", headers={"region": "eu"}))
    m = col.message()
    assert (m.body, m.headers["destination"]) == ("from pika", "/topic/py.orders.new"), m.headers
    assert m.headers["region"] == "eu", m.headers
    close(c)
    amqp.close()


def test_older_versions():
    for version in (10, 11):
        c, col = connect(version=version)
        dest = "/queue/py-v%d" % version
        rid = "sub-%d" % version
        c.subscribe(destination=dest, id="v", ack="client", headers={"receipt": rid})
        col.receipt(rid)
        send(c, col, dest, "v%d" % version)
        m = col.message()
        assert m.body == "v%d" % version
        if version == 10:
            c.ack(m.headers["message-id"])
        else:
            c.ack(m.headers["message-id"], "v")
        close(c)


def main():
    tests = [(n, f) for n, f in sorted(globals().items()) if n.startswith("test_")]
    failed = 0
    for name, fn in tests:
        try:
            fn()
            print("ok", name)
        except Exception as e:  # noqa: BLE001 - report every failure
            failed += 1
            print("FAIL", name, repr(e))
    print("%d passed, %d failed" % (len(tests) - failed, failed))
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main()
