"""aiokafka with its default settings: admin, producer, and a consumer
without a group (assigned partitions)."""

import asyncio
import os
import sys

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient, NewTopic

BOOTSTRAP = os.environ["BOOTSTRAP"]
TOPIC = f"aiokafka-{os.getpid()}"
N = 500


async def main() -> None:
    admin = AIOKafkaAdminClient(bootstrap_servers=BOOTSTRAP)
    await admin.start()
    await admin.create_topics([NewTopic(TOPIC, num_partitions=2, replication_factor=1)])
    topics = await admin.list_topics()
    assert TOPIC in topics, topics

    producer = AIOKafkaProducer(bootstrap_servers=BOOTSTRAP)  # defaults: acks=1, no idempotence
    await producer.start()
    sent = [await producer.send(TOPIC, key=str(i % 7).encode(), value=str(i).encode()) for i in range(N)]
    results = [await f for f in sent]
    await producer.stop()
    assert all(r.offset >= 0 for r in results)

    consumer = AIOKafkaConsumer(bootstrap_servers=BOOTSTRAP, group_id=None, enable_auto_commit=False)
    await consumer.start()
    parts = [TopicPartition(TOPIC, p) for p in range(2)]
    consumer.assign(parts)
    await consumer.seek_to_beginning(*parts)
    got = []
    deadline = asyncio.get_running_loop().time() + 30
    while len(got) < N and asyncio.get_running_loop().time() < deadline:
        for msgs in (await consumer.getmany(timeout_ms=500)).values():
            got.extend(msgs)
    await consumer.stop()
    values = sorted(int(m.value) for m in got)
    assert values == list(range(N)), f"got {len(values)} of {N}"
    # Per key, values ascend within the key's partition.
    last = {}
    for m in sorted(got, key=lambda m: (m.partition, m.offset)):
        assert last.get(m.key, -1) < int(m.value)
        last[m.key] = int(m.value)

    await admin.delete_topics([TOPIC])
    await admin.close()
    print(f"aiokafka: {N} records round-tripped")


if __name__ == "__main__":
    try:
        asyncio.run(main())
    except AssertionError as e:
        print(f"FAIL: {e}", file=sys.stderr)
        sys.exit(1)
