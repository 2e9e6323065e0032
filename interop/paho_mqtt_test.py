"""paho-mqtt against Ferry, MQTT 3.1.1 and 5.0 (and over WebSocket when MQTT_WS_PORT is set):
QoS 0/1/2 publish/subscribe, retained messages, wildcards, a persistent session receiving
queued messages after a reconnect, and a will."""
import os
import queue
import sys
import time
import uuid

import paho.mqtt.client as mqtt
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

HOST = "127.0.0.1"
PORT = int(os.environ["MQTT_PORT"])
WS_PORT = int(os.environ["MQTT_WS_PORT"]) if os.environ.get("MQTT_WS_PORT") else None
TIMEOUT = 10


def step(msg):
    print(f"[paho_mqtt] {msg}", flush=True)


def check(cond, msg):
    if not cond:
        raise AssertionError(msg)


class Client:
    """A connected paho client whose received messages land in a queue."""

    def __init__(self, client_id, protocol, clean=True, will=None, port=PORT, transport="tcp", expiry=None, only=None):
        self.protocol = protocol
        self.c = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=client_id, protocol=protocol,
                             transport=transport, clean_session=None if protocol == mqtt.MQTTv5 else clean)
        if transport == "websockets":
            self.c.ws_set_options(path="/mqtt")
        self.messages = queue.Queue()
        self.acks = queue.Queue()
        self.connected = queue.Queue()
        self.disconnected = queue.Queue()
        self.c.on_disconnect = lambda _c, _u, _f, rc, _p: self.disconnected.put(rc)
        # Other scenarios' traffic (retained messages too) reaches "#": keep only topics containing `only`.
        self.c.on_message = lambda _c, _u, m: (only is None or only in m.topic) and self.messages.put(
            (m.topic, m.payload, m.qos, m.retain))
        self.c.on_publish = lambda _c, _u, mid, _rc, _p: self.acks.put(mid)
        self.c.on_subscribe = lambda _c, _u, mid, codes, _p: self.acks.put(("sub", mid, [int(x.value) for x in codes]))
        self.c.on_connect = lambda _c, _u, flags, rc, _p: self.connected.put((flags.session_present, rc.value))
        # The store holds users (run.sh), so MQTT logins are required
        # (docs/security.md); MQTT_USER is a super user there.
        if os.environ.get("MQTT_USER"):
            self.c.username_pw_set(os.environ["MQTT_USER"], os.environ.get("MQTT_PASSWORD", ""))
        if will:
            topic, payload, qos = will
            self.c.will_set(topic, payload, qos=qos)
        kwargs = {}
        if protocol == mqtt.MQTTv5:
            props = Properties(PacketTypes.CONNECT)
            if expiry is not None:
                props.SessionExpiryInterval = expiry
            kwargs = {"clean_start": clean, "properties": props}
        self.c.connect(HOST, port, keepalive=30, **kwargs)
        self.c.loop_start()
        self.session_present, rc = self.connected.get(timeout=TIMEOUT)
        check(rc == 0, f"{client_id}: CONNACK code {rc}")

    def subscribe(self, filt, qos):
        _, mid = self.c.subscribe(filt, qos)
        kind, got_mid, codes = self.acks.get(timeout=TIMEOUT)
        check(kind == "sub" and got_mid == mid and codes == [qos], f"SUBACK for {filt}: {codes}")

    def publish(self, topic, payload, qos, retain=False):
        info = self.c.publish(topic, payload, qos=qos, retain=retain)
        info.wait_for_publish(timeout=TIMEOUT)
        check(info.is_published(), f"publish to {topic} at QoS {qos} not acknowledged")

    def receive(self, n):
        out = []
        for _ in range(n):
            out.append(self.messages.get(timeout=TIMEOUT))
        return out

    def quiet(self, seconds=0.5):
        try:
            m = self.messages.get(timeout=seconds)
        except queue.Empty:
            return
        raise AssertionError(f"unexpected message {m}")

    def close(self):
        """DISCONNECT, and wait until the socket is closed."""
        self.c.disconnect()
        self.disconnected.get(timeout=TIMEOUT)
        self.c.loop_stop()

    def drop(self):
        """Ends the connection without DISCONNECT (the will fires)."""
        self.c.loop_stop()
        self.c.socket().close()


def scenario(protocol, name, port=PORT, transport="tcp"):
    tag = f"{name}-{uuid.uuid4().hex[:6]}"
    step(f"{name}: QoS 0/1/2 with wildcards; $-topics not matched by '#'")
    sub = Client(f"{tag}-sub", protocol, port=port, transport=transport, only=tag)
    sub.subscribe(f"{tag}/+/temp", 2)
    sub.subscribe("#", 1)
    pub = Client(f"{tag}-pub", protocol, port=port, transport=transport)
    for qos in (0, 1, 2):
        pub.publish(f"{tag}/kitchen/temp", b"q%d" % qos, qos)
    pub.publish(f"$SYS/{tag}/hidden", b"no", 1)
    got = sub.receive(3)
    # "+" and "#" both match: one copy, at the higher of the granted QoS levels.
    check(sorted(got) == [(f"{tag}/kitchen/temp", b"q%d" % q, q, False) for q in (0, 1, 2)], f"got {got}")
    sub.quiet()

    step(f"{name}: retained messages, and an empty payload clears one")
    pub.publish(f"{tag}/r/a", b"ra", 1, retain=True)
    pub.publish(f"{tag}/r/b", b"rb", 1, retain=True)
    pub.publish(f"{tag}/r/b", b"", 1, retain=True)
    late = Client(f"{tag}-late", protocol, port=port, transport=transport)
    late.subscribe(f"{tag}/r/#", 1)
    check(late.receive(1) == [(f"{tag}/r/a", b"ra", 1, True)], "retained message")
    late.quiet()
    late.close()

    step(f"{name}: a persistent session gets what was queued while it was away")
    args = {"clean": False, "expiry": 3600} if protocol == mqtt.MQTTv5 else {"clean": False}
    p = Client(f"{tag}-persist", protocol, port=port, transport=transport, **args)
    p.subscribe(f"{tag}/queued/#", 2)
    p.close()
    # The broker reads DISCONNECT a moment after the client closed: publish once it has.
    time.sleep(0.3)
    # QoS 0 is not queued for offline sessions. (Sent first: sent last, it may
    # race the reconnect below and rightly reach the new connection.)
    pub.publish(f"{tag}/queued/x", b"zero", 0)
    for i in range(5):
        pub.publish(f"{tag}/queued/{i}", b"m%d" % i, 1 + i % 2)
    p = Client(f"{tag}-persist", protocol, port=port, transport=transport, **args)
    check(p.session_present, "session present after reconnect")
    # paho hands a QoS 2 message over only after PUBREL, so compare as sets.
    got = sorted(p.receive(5))
    check(got == [(f"{tag}/queued/{i}", b"m%d" % i, 1 + i % 2, False) for i in range(5)], f"queued: {got}")
    p.quiet()
    p.close()
    p = Client(f"{tag}-persist", protocol, port=port, transport=transport, clean=True)
    check(not p.session_present, "clean start drops the session")
    p.close()

    step(f"{name}: the will is published when a client vanishes, not on DISCONNECT")
    watcher = Client(f"{tag}-watch", protocol, port=port, transport=transport)
    watcher.subscribe(f"{tag}/will/#", 1)
    polite = Client(f"{tag}-polite", protocol, will=(f"{tag}/will/polite", b"bye", 1), port=port, transport=transport)
    polite.close()
    rude = Client(f"{tag}-rude", protocol, will=(f"{tag}/will/rude", b"gone", 1), port=port, transport=transport)
    rude.drop()
    check(watcher.receive(1) == [(f"{tag}/will/rude", b"gone", 1, False)], "will message")
    watcher.quiet()
    for c in (sub, pub, watcher):
        c.close()


def main():
    scenario(mqtt.MQTTv311, "v311")
    scenario(mqtt.MQTTv5, "v5")
    if WS_PORT:
        scenario(mqtt.MQTTv311, "ws-v311", port=WS_PORT, transport="websockets")
        scenario(mqtt.MQTTv5, "ws-v5", port=WS_PORT, transport="websockets")
    step("ok")


if __name__ == "__main__":
    try:
        main()
    except Exception as e:  # noqa: BLE001 - report and fail
        print(f"[paho_mqtt] FAILED: {e!r}", file=sys.stderr)
        sys.exit(1)
