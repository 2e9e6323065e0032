"""The seed's pika example (shared/seeds/000_74677abd2fbe18b5.txt), unmodified,
against Ferry's AMQP listener, then a pika worker that consumes it with
manual acknowledgement.

The seed connects to 'localhost' on the default port. Rather than editing its
text, the default port pika uses is pointed at the broker under test
(AMQP_PORT): the producer block below is the seed's code, line for line,
its Chinese comments included.
"""
import os
import sys

import pika

pika.ConnectionParameters.DEFAULT_PORT = int(os.environ["AMQP_PORT"])

# --- the seed, verbatim -------------------------------------------------------
import pika
connection = pika.BlockingConnection(pika.ConnectionParameters('localhost'))
channel = connection.channel()
channel.queue_declare(queue='task_queue', durable=True)  # 创建持久化队列
# 发送持久化消息
channel.basic_publish(
    exchange='',
    routing_key='task_queue',
    body='Hello World',
    properties=pika.BasicProperties(delivery_mode=2)  # 2表示持久化
)
connection.close()
# --- end of the seed ----------------------------------------------------------

# The worker side of the same tutorial: prefetch 1, manual ack.
connection = pika.BlockingConnection(pika.ConnectionParameters('localhost'))
channel = connection.channel()
channel.queue_declare(queue='task_queue', durable=True)
channel.basic_qos(prefetch_count=1)
received = []


def callback(ch, method, properties, body):
    received.append((body, properties.delivery_mode, method.redelivered))
    ch.basic_ack(delivery_tag=method.delivery_tag)
    ch.stop_consuming()


channel.basic_consume(queue='task_queue', on_message_callback=callback)
connection.call_later(20, channel.stop_consuming)
channel.start_consuming()
assert received == [(b'Hello World', 2, False)], received

# Acknowledged: the queue is empty now.
ok = channel.queue_declare(queue='task_queue', durable=True, passive=True)
assert ok.method.message_count == 0, ok.method.message_count

# Publisher confirms and a mandatory publish that cannot be routed.
channel.confirm_delivery()
channel.basic_publish(exchange='', routing_key='task_queue', body=b'confirmed',
                      properties=pika.BasicProperties(delivery_mode=2))
try:
    channel.basic_publish(exchange='', routing_key='nowhere', body=b'x', mandatory=True)
    raise AssertionError("unroutable mandatory publish was not returned")
except pika.exceptions.UnroutableError:
    pass
method, props, body = channel.basic_get(queue='task_queue', auto_ack=True)
assert body == b'confirmed', body
channel.queue_delete(queue='task_queue')
connection.close()
print("pika seed: ok")
sys.exit(0)
