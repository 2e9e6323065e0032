"""Transactions with three independent client implementations: confluent-kafka
(librdkafka), kafka-python and aiokafka each commit one transaction and abort
another; read_committed consumers of each client see exactly the committed
records, read_uncommitted ones see both."""

import asyncio
import os
import time

from confluent_kafka import Consumer, Producer, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic

BOOTSTRAP = os.environ["BOOTSTRAP"]
TOPIC = f"txn-{os.getpid()}"
N = 50


def confluent_txns() -> None:
    p = Producer({"bootstrap.servers": BOOTSTRAP, "transactional.id": f"ck-{os.getpid()}"})
    p.init_transactions(30)
    p.begin_transaction()
    for i in range(N):
        p.produce(TOPIC, key=b"ck", value=f"ck-commit-{i}".encode())
    p.commit_transaction(30)
    p.begin_transaction()
    for i in range(N):
        p.produce(TOPIC, key=b"ck", value=f"ck-abort-{i}".encode())
    p.flush(30)
    p.abort_transaction(30)


def kafka_python_txns() -> None:
    from kafka import KafkaProducer

    p = KafkaProducer(bootstrap_servers=BOOTSTRAP, transactional_id=f"kp-{os.getpid()}")
    p.init_transactions()
    p.begin_transaction()
    for i in range(N):
        p.send(TOPIC, key=b"kp", value=f"kp-commit-{i}".encode())
    p.commit_transaction()
    p.begin_transaction()
    for i in range(N):
        p.send(TOPIC, key=b"kp", value=f"kp-abort-{i}".encode())
    p.flush()
    p.abort_transaction()
    p.close()


async def aiokafka_txns() -> None:
    from aiokafka import AIOKafkaProducer

    p = AIOKafkaProducer(bootstrap_servers=BOOTSTRAP, transactional_id=f"ak-{os.getpid()}")
    await p.start()
    async with p.transaction():
        for i in range(N):
            await p.send(TOPIC, key=b"ak", value=f"ak-commit-{i}".encode())
    await p.begin_transaction()
    for i in range(N):
        await p.send(TOPIC, key=b"ak", value=f"ak-abort-{i}".encode())
    await p.flush()
    await p.abort_transaction()
    await p.stop()


def confluent_read(isolation: str, expected: int) -> list[str]:
    c = Consumer({
        "bootstrap.servers": BOOTSTRAP,
        "group.id": f"reader-{isolation}-{os.getpid()}",
        "isolation.level": isolation,
        "enable.auto.commit": False,
    })
    c.assign([TopicPartition(TOPIC, 0, 0)])
    got, deadline = [], time.time() + 30
    while time.time() < deadline and len(got) < expected:
        m = c.poll(0.5)
        if m is not None and m.error() is None:
            got.append(m.value().decode())
    # Nothing beyond what was expected.
    extra = c.poll(2.0)
    c.close()
    assert extra is None or extra.error() is not None, f"unexpected record {extra.value()!r}"
    return got


def kafka_python_read_committed() -> list[str]:
    from kafka import KafkaConsumer

    c = KafkaConsumer(bootstrap_servers=BOOTSTRAP, isolation_level="read_committed",
                      auto_offset_reset="earliest", enable_auto_commit=False, consumer_timeout_ms=3000)
    from kafka import TopicPartition as KTP
    c.assign([KTP(TOPIC, 0)])
    c.seek_to_beginning()
    got = [m.value.decode() for m in c]
    c.close()
    return got


def main() -> None:
    admin = AdminClient({"bootstrap.servers": BOOTSTRAP})
    admin.create_topics([NewTopic(TOPIC, num_partitions=1, replication_factor=1)])[TOPIC].result(30)
    confluent_txns()
    kafka_python_txns()
    asyncio.run(aiokafka_txns())

    committed = {f"{c}-commit-{i}" for c in ("ck", "kp", "ak") for i in range(N)}
    got = confluent_read("read_committed", len(committed))
    assert sorted(got) == sorted(committed), f"read_committed saw {len(got)} records, {sorted(set(got) - committed)[:5]}"
    got = kafka_python_read_committed()
    assert sorted(got) == sorted(committed), f"kafka-python read_committed saw {len(got)}"
    got = confluent_read("read_uncommitted", 6 * N)
    assert len(got) == 6 * N, len(got)
    print(f"transactions: ok ({len(committed)} committed records of 3 clients)")


if __name__ == "__main__":
    main()
