"""kafka-python against Ferry: admin create/delete, gzip produce (acks=all), assign()+seek consume."""
import logging
import os
import sys
import time
import uuid

from kafka import KafkaAdminClient, KafkaConsumer, KafkaProducer, TopicPartition
from kafka.admin import NewTopic

BOOTSTRAP = os.environ["BOOTSTRAP"]
TOPIC = f"kp-{uuid.uuid4().hex[:8]}"
COUNT = 500
if os.environ.get("KP_DEBUG"):
    logging.basicConfig(level=logging.DEBUG)


def step(msg):
    print(f"[kafka_python] {msg}", flush=True)


def check(cond, msg):
    if not cond:
        raise AssertionError(msg)


def main():
    admin = KafkaAdminClient(bootstrap_servers=BOOTSTRAP, request_timeout_ms=10000)
    step(f"create topic {TOPIC}")
    admin.create_topics([NewTopic(TOPIC, num_partitions=1, replication_factor=1)], timeout_ms=10000)
    check(TOPIC in admin.list_topics(), "created topic not listed")

    step(f"produce {COUNT} messages with the default settings (idempotent, acks=all), then gzip")
    producer = KafkaProducer(bootstrap_servers=BOOTSTRAP)
    check(producer.config.get("enable_idempotence") is not False, "expected an idempotent default producer")
    futures = [producer.send(TOPIC, key=b"k%d" % (i % 7), value=b"v%d" % i) for i in range(COUNT // 2)]
    producer.flush(timeout=30)
    producer.close(timeout=10)
    producer = KafkaProducer(bootstrap_servers=BOOTSTRAP, acks="all", compression_type="gzip", linger_ms=5)
    futures += [producer.send(TOPIC, key=b"k%d" % (i % 7), value=b"v%d" % i) for i in range(COUNT // 2, COUNT)]
    producer.flush(timeout=30)
    offsets = [f.get(timeout=10).offset for f in futures]
    check(offsets == list(range(COUNT)), f"unexpected offsets: {offsets[:5]}...{offsets[-5:]}")
    producer.close(timeout=10)

    step("consume with assign() + seek_to_beginning, no group")
    consumer = KafkaConsumer(bootstrap_servers=BOOTSTRAP, group_id=None, enable_auto_commit=False,
                             consumer_timeout_ms=10000)
    tp = TopicPartition(TOPIC, 0)
    consumer.assign([tp])
    consumer.seek_to_beginning(tp)
    got = []
    deadline = time.time() + 30
    while len(got) < COUNT and time.time() < deadline:
        for records in consumer.poll(timeout_ms=1000).values():
            got.extend((r.offset, r.key, r.value) for r in records)
    consumer.close()
    step(f"  read {len(got)} messages")
    expected = [(i, b"k%d" % (i % 7), b"v%d" % i) for i in range(COUNT)]
    check(got == expected, f"read {len(got)} records; first mismatch: "
          f"{next(((a, b) for a, b in zip(got, expected) if a != b), None)}")

    step("delete topic")
    admin.delete_topics([TOPIC], timeout_ms=10000)
    check(TOPIC not in admin.list_topics(), "deleted topic still listed")
    admin.close()
    step("OK")


if __name__ == "__main__":
    try:
        main()
    except Exception as e:  # noqa: BLE001 - print a one-line reason, exit non-zero
        print(f"[kafka_python] FAIL: {type(e).__name__}: {e}", file=sys.stderr, flush=True)
        sys.exit(1)
