#!/usr/bin/env python3
"""Cross-protocol latency: records produced over Kafka (confluent-kafka,
acks=all) into a topic that feeds an AMQP queue (x-kafka-topic), received by
a pika consumer, beside a Kafka consumer reading the very same records in
the same run (the reference). Prints p50/p99/max of both and their ratio.

usage: scripts/bench-bridge.sh [FERRY_BINARY] [--records N] [--rate R]
(the .sh wrapper builds the release binary and makes the venv)
"""
import argparse
import shutil
import socket
import struct
import subprocess
import tempfile
import threading
import time

import pika
from confluent_kafka import Consumer, Producer, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic

ap = argparse.ArgumentParser()
ap.add_argument("binary")
ap.add_argument("--records", type=int, default=2000)
ap.add_argument("--rate", type=int, default=200, help="records per second")
args = ap.parse_args()


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def summary(lat):
    lat = sorted(lat)
    return lat[len(lat) // 2] * 1e3, lat[int(len(lat) * 0.99)] * 1e3, lat[-1] * 1e3


kafka, amqp, http, mqtt = free_port(), free_port(), free_port(), free_port()
data = tempfile.mkdtemp(prefix="bench-bridge-")
broker = subprocess.Popen(
    [args.binary, "serve", "--data-dir", data, "--kafka-listen", f"127.0.0.1:{kafka}",
     "--amqp-listen", f"127.0.0.1:{amqp}", "--http-listen", f"127.0.0.1:{http}", "--mqtt-listen", f"127.0.0.1:{mqtt}"],
    stderr=subprocess.DEVNULL)
try:
    deadline = time.time() + 30
    while True:
        try:
            for port in (kafka, amqp):
                socket.create_connection(("127.0.0.1", port)).close()
            break
        except OSError:
            assert time.time() < deadline, "ferry did not start"
            time.sleep(0.1)
    admin = AdminClient({"bootstrap.servers": f"127.0.0.1:{kafka}"})
    admin.create_topics([NewTopic("bridged", 1, 1)])["bridged"].result()

    conn = pika.BlockingConnection(pika.ConnectionParameters("127.0.0.1", amqp))
    channel = conn.channel()
    channel.queue_declare("bridged", durable=True, arguments={"x-kafka-topic": "bridged"})
    via_amqp, via_kafka = [], []

    def on_message(ch, _method, _props, body):
        via_amqp.append(time.time() - struct.unpack("d", body[:8])[0])
        if len(via_amqp) >= args.records:
            ch.stop_consuming()

    channel.basic_consume("bridged", on_message, auto_ack=True)

    consumer = Consumer({"bootstrap.servers": f"127.0.0.1:{kafka}", "group.id": "bench-bridge",
                         "fetch.wait.max.ms": 5, "fetch.min.bytes": 1})
    consumer.assign([TopicPartition("bridged", 0, 0)])

    def consume_kafka():
        end = time.time() + 60
        while len(via_kafka) < args.records and time.time() < end:
            m = consumer.poll(0.1)
            if m is not None and not m.error():
                via_kafka.append(time.time() - struct.unpack("d", m.value()[:8])[0])

    producer = Producer({"bootstrap.servers": f"127.0.0.1:{kafka}", "linger.ms": 0, "acks": "all"})

    def produce():
        start = time.time()
        for i in range(args.records):
            pause = start + i / args.rate - time.time()
            if pause > 0:
                time.sleep(pause)
            producer.produce("bridged", struct.pack("d", time.time()) + b"x" * 100)
            producer.poll(0)
        producer.flush()

    threads = [threading.Thread(target=produce), threading.Thread(target=consume_kafka)]
    time.sleep(0.5)  # the feed picks the queue up
    for t in threads:
        t.start()
    channel.start_consuming()
    for t in threads:
        t.join()
    consumer.close()
    conn.close()
finally:
    broker.terminate()
    broker.wait()
    shutil.rmtree(data, ignore_errors=True)

k, a = summary(via_kafka), summary(via_amqp)
print(f"{args.records} records of 108 B at {args.rate}/s, Kafka producer (acks=all); latency in ms")
print(f"{'':<24} {'p50':>7} {'p99':>7} {'max':>7}")
print(f"{'Kafka consumer (ref)':<24} {k[0]:7.2f} {k[1]:7.2f} {k[2]:7.2f}")
print(f"{'AMQP consumer (bridged)':<24} {a[0]:7.2f} {a[1]:7.2f} {a[2]:7.2f}")
print(f"{'ratio bridged / Kafka':<24} {a[0] / k[0]:7.2f} {a[1] / k[1]:7.2f}")
