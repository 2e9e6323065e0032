"""confluent-kafka (librdkafka) against Ferry: admin, compressed keyed produce, assign()-consume."""
import os
import sys
import time
import uuid
from collections import defaultdict

from confluent_kafka import OFFSET_BEGINNING, Consumer, KafkaError, KafkaException, Producer, TopicPartition
from confluent_kafka.admin import AdminClient, ConfigResource, NewTopic

BOOTSTRAP = os.environ["BOOTSTRAP"]
TOPIC = f"ck-{uuid.uuid4().hex[:8]}"
PARTITIONS = 3
PER_CODEC = 250
CODECS = ["gzip", "snappy", "lz4", "zstd"]
KEYS = [f"key-{i}" for i in range(10)]
DEBUG = {"debug": os.environ["CK_DEBUG"]} if os.environ.get("CK_DEBUG") else {}


def step(msg):
    print(f"[confluent_kafka] {msg}", flush=True)


def check(cond, msg):
    if not cond:
        raise AssertionError(msg)


def main():
    common = {"bootstrap.servers": BOOTSTRAP, **DEBUG}
    admin = AdminClient(common)

    step(f"create topic {TOPIC} with {PARTITIONS} partitions")
    for fut in admin.create_topics([NewTopic(TOPIC, PARTITIONS, 1)], operation_timeout=10).values():
        fut.result(timeout=15)

    md = admin.list_topics(topic=TOPIC, timeout=10)
    check(TOPIC in md.topics and md.topics[TOPIC].error is None, f"topic missing from metadata: {md.topics}")
    check(len(md.topics[TOPIC].partitions) == PARTITIONS, f"partitions: {md.topics[TOPIC].partitions}")

    step("describe_configs has retention.ms")
    res = ConfigResource(ConfigResource.Type.TOPIC, TOPIC)
    configs = admin.describe_configs([res])[res].result(timeout=15)
    check("retention.ms" in configs, f"retention.ms missing; got {sorted(configs)}")
    step(f"  retention.ms = {configs['retention.ms'].value}")

    # Produce: 250 messages per codec, values "<codec>-<seq>"; per-key sequence numbers.
    sent = []          # (key, value) in send order
    delivered, errors = [], []

    def on_delivery(err, msg):
        (errors if err else delivered).append(err or msg)

    t_before = int(time.time() * 1000)
    seq = 0
    for codec in CODECS:
        step(f"produce {PER_CODEC} messages with compression={codec}, acks=all")
        p = Producer({**common, "acks": "all", "compression.type": codec, "linger.ms": 5})
        for _ in range(PER_CODEC):
            key = KEYS[seq % len(KEYS)]
            value = f"{codec}-{seq}"
            p.produce(TOPIC, key=key, value=value, on_delivery=on_delivery)
            sent.append((key, value))
            seq += 1
            p.poll(0)
        check(p.flush(30) == 0, f"{codec}: flush left messages undelivered")
    check(not errors, f"delivery errors: {errors[:5]}")
    check(len(delivered) == len(sent), f"delivered {len(delivered)} of {len(sent)}")
    check(all(m.offset() >= 0 for m in delivered), "delivery report without offset")

    step("consume with assign() from OFFSET_BEGINNING")
    c = Consumer({**common, "group.id": "ferry-interop-unused", "enable.auto.commit": False,
                  "enable.auto.offset.store": False, "enable.partition.eof": True})
    c.assign([TopicPartition(TOPIC, p, OFFSET_BEGINNING) for p in range(PARTITIONS)])
    got, eof = [], set()
    deadline = time.time() + 30
    while len(eof) < PARTITIONS and time.time() < deadline:
        m = c.poll(1.0)
        if m is None:
            continue
        if m.error():
            if m.error().code() == KafkaError._PARTITION_EOF:
                eof.add(m.partition())
                continue
            raise KafkaException(m.error())
        eof.discard(m.partition())
        got.append((m.partition(), m.offset(), m.key().decode(), m.value().decode(), m.timestamp()[1]))

    step(f"  read {len(got)} messages")
    check(len(got) == len(sent), f"read {len(got)} messages, expected {len(sent)}")
    check(len({(p, o) for p, o, *_ in got}) == len(got), "duplicate (partition, offset)")
    check(sorted((k, v) for _, _, k, v, _ in got) == sorted(sent), "consumed key/values differ from produced")
    by_key_sent, by_key_got = defaultdict(list), defaultdict(list)
    for k, v in sent:
        by_key_sent[k].append(v)
    for _, _, k, v, _ in got:
        by_key_got[k].append(v)
    check(by_key_sent == by_key_got, "per-key order differs")
    parts_of_key = defaultdict(set)
    for p, _, k, _, _ in got:
        parts_of_key[k].add(p)
    check(all(len(s) == 1 for s in parts_of_key.values()), "a key landed in more than one partition")

    step("offsets_for_times")
    query = [TopicPartition(TOPIC, p, t_before) for p in range(PARTITIONS)]
    for tp in c.offsets_for_times(query, timeout=10):
        check(tp.error is None, f"offsets_for_times error: {tp.error}")
        first = min(o for p, o, *_ in got if p == tp.partition)
        check(tp.offset == first, f"p{tp.partition}: offset for ts {t_before} is {tp.offset}, expected {first}")
    future = [TopicPartition(TOPIC, p, int(time.time() * 1000) + 3_600_000) for p in range(PARTITIONS)]
    for tp in c.offsets_for_times(future, timeout=10):
        check(tp.error is None, f"offsets_for_times error: {tp.error}")
        check(tp.offset == -1, f"p{tp.partition}: future timestamp gave offset {tp.offset}, expected -1 (end)")
    c.close()

    step("delete topic")
    for fut in admin.delete_topics([TOPIC], operation_timeout=10).values():
        fut.result(timeout=15)
    deadline = time.time() + 10
    while TOPIC in admin.list_topics(timeout=10).topics:
        check(time.time() < deadline, "topic still listed 10 s after delete")
        time.sleep(0.5)
    step("OK")


if __name__ == "__main__":
    try:
        main()
    except Exception as e:  # noqa: BLE001 - print a one-line reason, exit non-zero
        print(f"[confluent_kafka] FAIL: {type(e).__name__}: {e}", file=sys.stderr, flush=True)
        sys.exit(1)
