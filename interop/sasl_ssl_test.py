"""confluent-kafka over SASL_SSL with SCRAM-SHA-512: the broker's certificate
checked against the interop CA ($SSL_CA), produce and consume 1 KiB records
(the fetch data goes through TLS, not sendfile), the metadata advertising the
SASL_SSL listener, and a client that does not trust the broker refused.

The interop broker has a SASL_SSL listener ($SSL_BOOTSTRAP) beside the others
and the user `interop`; ACLs for it on `ssl-*` are made here with the
AdminClient on the plain listener (User:ANONYMOUS is a super user there)."""
import os
import time
import uuid

from confluent_kafka import Consumer, KafkaException, Producer
from confluent_kafka.admin import (
    AclBinding,
    AclOperation,
    AclPermissionType,
    AdminClient,
    NewTopic,
    ResourcePatternType,
    ResourceType,
)

BOOTSTRAP = os.environ["BOOTSTRAP"]
SSL_BOOTSTRAP = os.environ["SSL_BOOTSTRAP"]
SSL_CA = os.environ["SSL_CA"]
USER, PASSWORD = os.environ["SASL_USER"], os.environ["SASL_PASSWORD"]
TOPIC = f"ssl-py-{uuid.uuid4().hex[:8]}"
GROUP = f"ssl-g-{uuid.uuid4().hex[:8]}"


def step(msg):
    print(f"[sasl_ssl] {msg}", flush=True)


def check(cond, msg):
    if not cond:
        raise AssertionError(msg)


def conf(**extra):
    return {
        "bootstrap.servers": SSL_BOOTSTRAP,
        "security.protocol": "SASL_SSL",
        "ssl.ca.location": SSL_CA,
        "sasl.mechanism": "SCRAM-SHA-512",
        "sasl.username": USER,
        "sasl.password": PASSWORD,
        **extra,
    }


def main():
    admin = AdminClient({"bootstrap.servers": BOOTSTRAP})
    step(f"create {TOPIC} and ACLs for User:{USER}")
    for fut in admin.create_topics([NewTopic(TOPIC, 1, 1)], operation_timeout=10).values():
        fut.result(timeout=15)
    bindings = [
        AclBinding(ResourceType.TOPIC, "ssl-", ResourcePatternType.PREFIXED, f"User:{USER}", "*", op,
                   AclPermissionType.ALLOW)
        for op in (AclOperation.WRITE, AclOperation.READ)
    ] + [
        AclBinding(ResourceType.GROUP, "ssl-g-", ResourcePatternType.PREFIXED, f"User:{USER}", "*",
                   AclOperation.READ, AclPermissionType.ALLOW),
    ]
    for fut in admin.create_acls(bindings, request_timeout=10).values():
        fut.result()

    step("metadata over SASL_SSL advertises the SASL_SSL listener")
    p = Producer(conf(**{"message.timeout.ms": 20000, "acks": "all"}))
    md = p.list_topics(TOPIC, timeout=15)
    advertised = {f"{b.host}:{b.port}" for b in md.brokers.values()}
    check(advertised == {SSL_BOOTSTRAP}, f"advertised {advertised}")

    step("produce 500 x 1 KiB with acks=all")
    errors = []
    for i in range(500):
        p.produce(TOPIC, value=f"{i:06d}".encode() + b"x" * 1018,
                  on_delivery=lambda err, _m: errors.append(err) if err else None)
    check(p.flush(60) == 0 and not errors, f"produce: {errors[:3]}")

    step("consume them in an allowed group")
    c = Consumer(conf(**{"group.id": GROUP, "auto.offset.reset": "earliest"}))
    c.subscribe([TOPIC])
    got, deadline = [], time.time() + 60
    while len(got) < 500 and time.time() < deadline:
        m = c.poll(0.5)
        if m is None:
            continue
        if m.error():
            raise KafkaException(m.error())
        got.append(m.value())
    c.close()
    check(len(got) == 500, f"consumed {len(got)} of 500")
    check(all(v[:6] == f"{i:06d}".encode() and len(v) == 1024 for i, v in enumerate(got)), "records differ")

    step("a client without the CA does not connect")
    seen = []
    # Without ssl.ca.location librdkafka trusts only the system CAs.
    untrusting = {k: v for k, v in conf().items() if k != "ssl.ca.location"}
    bad = Producer({**untrusting, "error_cb": seen.append})
    deadline = time.time() + 15
    while not seen and time.time() < deadline:
        bad.poll(0.2)
    check(seen, "no error for an untrusted broker certificate")
    step("ok")


if __name__ == "__main__":
    main()
