"""confluent-kafka over SASL_PLAINTEXT with SCRAM-SHA-256 (and PLAIN), ACLs made with
its AdminClient (CreateAcls / DescribeAcls), and a wrong password refused.

The interop broker has a SASL_PLAINTEXT listener ($SASL_BOOTSTRAP) beside the plain
one, the user `interop` created before its first start (`ferry user create
--data-dir`), and User:ANONYMOUS as super user so the other tests run as before."""
import os
import time
import uuid

from confluent_kafka import Consumer, KafkaError, KafkaException, Producer
from confluent_kafka.admin import (
    AclBinding,
    AclBindingFilter,
    AclOperation,
    AclPermissionType,
    AdminClient,
    NewTopic,
    ResourcePatternType,
    ResourceType,
)

BOOTSTRAP = os.environ["BOOTSTRAP"]
SASL_BOOTSTRAP = os.environ["SASL_BOOTSTRAP"]
USER, PASSWORD = os.environ["SASL_USER"], os.environ["SASL_PASSWORD"]
TOPIC = f"sasl-{uuid.uuid4().hex[:8]}"
GROUP = f"sasl-g-{uuid.uuid4().hex[:8]}"


def step(msg):
    print(f"[sasl] {msg}", flush=True)


def check(cond, msg):
    if not cond:
        raise AssertionError(msg)


def sasl(mechanism, password=PASSWORD):
    return {
        "bootstrap.servers": SASL_BOOTSTRAP,
        "security.protocol": "SASL_PLAINTEXT",
        "sasl.mechanism": mechanism,
        "sasl.username": USER,
        "sasl.password": password,
    }


def main():
    admin = AdminClient({"bootstrap.servers": BOOTSTRAP})
    step(f"create {TOPIC} and ACLs for User:{USER} (prefix sasl-)")
    for fut in admin.create_topics([NewTopic(TOPIC, 1, 1)], operation_timeout=10).values():
        fut.result(timeout=15)
    bindings = [
        AclBinding(ResourceType.TOPIC, "sasl-", ResourcePatternType.PREFIXED, f"User:{USER}", "*", op, AclPermissionType.ALLOW)
        for op in (AclOperation.WRITE, AclOperation.READ)
    ] + [
        AclBinding(ResourceType.GROUP, "sasl-g-", ResourcePatternType.PREFIXED, f"User:{USER}", "*",
                   AclOperation.READ, AclPermissionType.ALLOW),
    ]
    for fut in admin.create_acls(bindings, request_timeout=10).values():
        fut.result()
    listed = admin.describe_acls(
        AclBindingFilter(ResourceType.ANY, None, ResourcePatternType.ANY, f"User:{USER}", None,
                         AclOperation.ANY, AclPermissionType.ANY),
        request_timeout=10,
    ).result()
    check(len(listed) == 3, f"describe_acls: {listed}")

    step("produce with SCRAM-SHA-256 and PLAIN")
    for mechanism in ("SCRAM-SHA-256", "PLAIN"):
        p = Producer({**sasl(mechanism), "message.timeout.ms": 15000})
        errors = []
        p.produce(TOPIC, value=mechanism.encode(), on_delivery=lambda err, _m: errors.append(err) if err else None)
        check(p.flush(20) == 0 and not errors, f"{mechanism} produce: {errors}")

    step("consume with SCRAM-SHA-256 in an allowed group")
    c = Consumer({**sasl("SCRAM-SHA-256"), "group.id": GROUP, "auto.offset.reset": "earliest"})
    c.subscribe([TOPIC])
    got, deadline = [], time.time() + 30
    while len(got) < 2 and time.time() < deadline:
        m = c.poll(0.5)
        if m is None:
            continue
        if m.error():
            raise KafkaException(m.error())
        got.append(m.value())
    c.close()
    check(sorted(got) == [b"PLAIN", b"SCRAM-SHA-256"], f"consumed {got}")

    step("a wrong password is an authentication error")
    seen = []
    bad = Producer({**sasl("SCRAM-SHA-256", "wrong"), "error_cb": lambda e: seen.append(e)})
    deadline = time.time() + 15
    while not seen and time.time() < deadline:
        bad.poll(0.2)
    check(any(e.code() == KafkaError._AUTHENTICATION for e in seen), f"errors: {seen}")
    step("ok")


if __name__ == "__main__":
    main()
