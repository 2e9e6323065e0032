"""One user store and authorizer for AMQP and MQTT (docs/security.md), with
Python clients over TLS:

- pika over AMQPS as a user limited to one vhost with write-only permission:
  publishing is confirmed, consuming is refused with 403 ACCESS_REFUSED,
  another vhost is refused, a wrong password is refused;
- paho-mqtt over MQTTS with the topic ACL `tls/%u/#` (mqtt-filter): its own
  topics are granted, others get SUBACK 0x80, a wrong password is refused.

run.sh starts the broker with the TLS listeners (AMQPS_PORT, MQTTS_PORT, the
CA in TLS_CA), the vhost `tls-vhost`, the user TLS_USER (created before the
first start), MQTT_USER as super user; ACLs are added here with `ferry acl`
over the plain Kafka listener (whose anonymous clients are super users)."""
import os
import queue
import ssl
import subprocess
import uuid

import paho.mqtt.client as mqtt
import pika
import pika.exceptions

FERRY = os.environ["FERRY_BIN"]
BOOTSTRAP = os.environ["BOOTSTRAP"]
CA = os.environ["TLS_CA"]
AMQPS_PORT = int(os.environ["AMQPS_PORT"])
MQTTS_PORT = int(os.environ["MQTTS_PORT"])
USER, PASSWORD = os.environ["TLS_USER"], os.environ["TLS_PASSWORD"]
ADMIN, ADMIN_PASSWORD = os.environ["MQTT_USER"], os.environ["MQTT_PASSWORD"]
VHOST = "tls-vhost"
TIMEOUT = 10


def step(msg):
    print(f"[authz_tls] {msg}", flush=True)


def check(cond, msg):
    if not cond:
        raise AssertionError(msg)


def acl_add(*args):
    r = subprocess.run([FERRY, "acl", "add", "--brokers", BOOTSTRAP, *args], capture_output=True, text=True,
                       timeout=30)
    check(r.returncode == 0, f"ferry acl add {args}: {r.stdout}{r.stderr}")


def amqps(user, password, vhost):
    ctx = ssl.create_default_context(cafile=CA)
    return pika.BlockingConnection(pika.ConnectionParameters(
        host="127.0.0.1", port=AMQPS_PORT, virtual_host=vhost,
        credentials=pika.PlainCredentials(user, password),
        ssl_options=pika.SSLOptions(ctx, "127.0.0.1"), connection_attempts=1, socket_timeout=TIMEOUT))


def pika_part():
    q = f"tls-jobs-{uuid.uuid4().hex[:8]}"
    acl_add("--allow-principal", f"User:{USER}", "--operation", "describe", "--vhost", VHOST)
    acl_add("--allow-principal", f"User:{USER}", "--operation", "write", "--exchange", f"{VHOST}/amq.default")
    step("the super user declares the queue over AMQPS")
    admin = amqps(ADMIN, ADMIN_PASSWORD, VHOST)
    ach = admin.channel()
    ach.queue_declare(queue=q)

    step("write-only user: publish is confirmed")
    conn = amqps(USER, PASSWORD, VHOST)
    ch = conn.channel()
    ch.confirm_delivery()
    ch.basic_publish(exchange="", routing_key=q, body=b"job-1", mandatory=True)

    step("consume is refused with 403 ACCESS_REFUSED")
    try:
        ch.basic_consume(queue=q, on_message_callback=lambda *a: None)
        conn.process_data_events(time_limit=2)
        raise AssertionError("consume was not refused")
    except pika.exceptions.ChannelClosedByBroker as e:
        check(e.reply_code == 403, f"consume refused with {e.reply_code} {e.reply_text}")
    conn.close()

    step("another vhost is refused")
    try:
        amqps(USER, PASSWORD, "/").close()
        raise AssertionError("vhost / was opened")
    except pika.exceptions.AMQPConnectionError as e:
        step(f"refused: {e!r}")

    step("a wrong password is refused")
    try:
        amqps(USER, "wrong", VHOST).close()
        raise AssertionError("a wrong password logged in")
    except pika.exceptions.AMQPConnectionError as e:
        step(f"refused: {e!r}")

    method, _props, body = ach.basic_get(queue=q, auto_ack=True)
    check(method is not None and body == b"job-1", f"the job arrived: {body!r}")
    ach.queue_delete(queue=q)
    admin.close()


class Mqtts:
    def __init__(self, client_id, user, password):
        self.c = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=client_id, protocol=mqtt.MQTTv311)
        self.c.tls_set(ca_certs=CA)
        self.c.username_pw_set(user, password)
        self.connected, self.acks, self.messages = queue.Queue(), queue.Queue(), queue.Queue()
        self.c.on_connect = lambda _c, _u, _f, rc, _p: self.connected.put(rc)
        self.c.on_subscribe = lambda _c, _u, mid, codes, _p: self.acks.put([int(x.value) for x in codes])
        self.c.on_message = lambda _c, _u, m: self.messages.put((m.topic, m.payload))
        self.c.connect("127.0.0.1", MQTTS_PORT, keepalive=30)
        self.c.loop_start()
        self.rc = self.connected.get(timeout=TIMEOUT)

    def close(self):
        self.c.disconnect()
        self.c.loop_stop()


def paho_part():
    acl_add("--allow-principal", "User:*", "--operation", "all", "--mqtt-topic", "tls/%u/#",
            "--resource-pattern-type", "mqtt-filter")
    step("paho over MQTTS: own topics granted, others refused (0x80)")
    c = Mqtts(f"authz-{uuid.uuid4().hex[:6]}", USER, PASSWORD)
    check(not c.rc.is_failure, f"connect: {c.rc}")
    c.c.subscribe(f"tls/{USER}/#", qos=1)
    check(c.acks.get(timeout=TIMEOUT) == [1], "own filter granted with QoS 1")
    c.c.subscribe("tls/other/#", qos=1)
    check(c.acks.get(timeout=TIMEOUT) == [0x80], "another user's filter refused with 0x80")
    c.c.publish(f"tls/{USER}/t", b"mine", qos=1).wait_for_publish(TIMEOUT)
    topic, payload = c.messages.get(timeout=TIMEOUT)
    check((topic, payload) == (f"tls/{USER}/t", b"mine"), f"got {topic} {payload!r}")
    c.close()

    step("a wrong password: CONNACK refused")
    bad = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id="authz-bad", protocol=mqtt.MQTTv311)
    bad.tls_set(ca_certs=CA)
    bad.username_pw_set(USER, "wrong")
    rcs = queue.Queue()
    bad.on_connect = lambda _c, _u, _f, rc, _p: rcs.put(rc)
    bad.connect("127.0.0.1", MQTTS_PORT, keepalive=30)
    bad.loop_start()
    rc = rcs.get(timeout=TIMEOUT)
    bad.loop_stop()
    check(rc.is_failure, f"a wrong password was accepted: {rc}")


def main():
    pika_part()
    paho_part()
    step("ok")


if __name__ == "__main__":
    main()
