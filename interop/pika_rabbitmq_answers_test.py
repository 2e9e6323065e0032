"""pika against the answers its users test for on RabbitMQ (issue #20):

- exchange.declare of an unknown type: the channel is closed with 406
  PRECONDITION_FAILED and the connection keeps working;
- basic.publish with immediate=true: the connection is closed with 540
  NOT_IMPLEMENTED. pika 1.x no longer offers `immediate` in basic_publish,
  so the method is sent through the channel's own send path, as pika 0.x
  did for `basic_publish(..., immediate=True)`.
"""
import os

import pika
import pika.exceptions
from pika import spec

params = pika.ConnectionParameters("127.0.0.1", int(os.environ["AMQP_PORT"]))

# Unknown exchange type: channel closed with 406, connection still usable.
conn = pika.BlockingConnection(params)
ch = conn.channel()
try:
    ch.exchange_declare(exchange="odd", exchange_type="x-unknown")
    raise AssertionError("exchange.declare of an unknown type succeeded")
except pika.exceptions.ChannelClosedByBroker as e:
    assert e.reply_code == 406, (e.reply_code, e.reply_text)
assert conn.is_open
ch = conn.channel()
ch.queue_declare(queue="pika-answers", auto_delete=True)
ch.close()
conn.close()

# immediate=true: connection closed with 540.
conn = pika.BlockingConnection(params)
ch = conn.channel()
publish = spec.Basic.Publish(exchange="", routing_key="pika-answers", immediate=True)
ch._impl._send_method(publish, (spec.BasicProperties(), b"now"))
try:
    conn.process_data_events(time_limit=10)
    conn.sleep(1)
    raise AssertionError("the connection was not closed")
except pika.exceptions.ConnectionClosedByBroker as e:
    assert e.reply_code == 540, (e.reply_code, e.reply_text)
print("pika: 406 for an unknown exchange type, 540 for immediate=true")
