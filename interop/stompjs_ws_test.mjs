// STOMP over WebSocket with @stomp/stompjs (the STOMP client web pages use,
// here under Node with the `ws` package as its WebSocket) against `/stomp`
// on the MQTT WebSocket listener: subprotocol negotiation, receipts,
// client-individual ACK and NACK with redelivery, a transaction, a binary
// body with NULs (content-length), /topic fan-out, heart-beats both ways,
// and an ERROR frame for a queue that does not exist.
// Env: MQTT_WS_PORT. Every wait is bounded; exits non-zero on the first failure.
import { Client } from "@stomp/stompjs";
import WebSocket from "ws";

const URL = `ws://127.0.0.1:${process.env.MQTT_WS_PORT}/stomp`;
const WAIT_MS = 10000;
const run = `${process.pid}`;

function assert(cond, msg) {
  if (!cond) throw new Error(msg);
}

function within(promise, what) {
  let timer;
  const timeout = new Promise((_, reject) => {
    timer = setTimeout(() => reject(new Error(`timed out waiting for ${what}`)), WAIT_MS);
  });
  return Promise.race([promise, timeout]).finally(() => clearTimeout(timer));
}

// Connects; resolves with the client and its CONNECTED frame.
function connect(extra = {}) {
  const errors = [];
  const client = new Client({
    webSocketFactory: () => new WebSocket(URL, ["v12.stomp", "v11.stomp", "v10.stomp"]),
    connectHeaders: { login: "guest", passcode: "guest", host: "/" },
    reconnectDelay: 0,
    heartbeatIncoming: 0,
    heartbeatOutgoing: 0,
    debug: () => {},
    ...extra,
  });
  client.errors = errors;
  const connected = new Promise((resolve, reject) => {
    client.onConnect = (frame) => resolve(frame);
    client.onStompError = (frame) => {
      errors.push(frame);
      reject(new Error(`ERROR frame: ${frame.headers.message}`));
    };
    client.onWebSocketError = () => reject(new Error("websocket error"));
  });
  client.activate();
  return within(connected, "CONNECTED").then((frame) => ({ client, frame }));
}

// Messages of one subscription, taken in order.
function inbox() {
  const got = [];
  const waiting = [];
  return {
    on: (m) => (waiting.length ? waiting.shift()(m) : got.push(m)),
    next: (what) => within(new Promise((r) => (got.length ? r(got.shift()) : waiting.push(r))), what),
    size: () => got.length,
  };
}

function sendWithReceipt(client, destination, body, headers = {}, binary = false) {
  const receipt = `r-${Math.random().toString(36).slice(2)}`;
  const done = new Promise((r) => client.watchForReceipt(receipt, r));
  const frame = { destination, headers: { ...headers, receipt } };
  if (binary) frame.binaryBody = body;
  else frame.body = body;
  client.publish(frame);
  return within(done, `RECEIPT ${receipt}`);
}

async function close(client) {
  await within(client.deactivate(), "disconnect");
}

async function testQueueAcksAndNack() {
  const { client, frame } = await connect();
  assert(frame.headers.version === "1.2", `negotiated ${frame.headers.version}`);
  assert(client.webSocket.protocol === "v12.stomp", `subprotocol ${client.webSocket.protocol}`);
  const queue = `/queue/stompjs-${run}`;
  for (let i = 0; i < 3; i++) {
    await sendWithReceipt(client, queue, `m${i}`, { "content-type": "text/plain", "x-app": `v${i}` });
  }
  const box = inbox();
  const sub = client.subscribe(queue, box.on, { ack: "client-individual", "prefetch-count": "10" });
  const first = await box.next("m0");
  assert(first.body === "m0", `first body ${first.body}`);
  assert(first.headers["x-app"] === "v0" && first.headers["content-type"] === "text/plain", "headers kept");
  first.ack();
  const second = await box.next("m1");
  second.nack({ requeue: "true" });
  const third = await box.next("m2");
  third.ack();
  const again = await box.next("m1 redelivered");
  assert(again.body === "m1" && again.headers.redelivered === "true", `redelivery ${JSON.stringify(again.headers)}`);
  again.ack();
  sub.unsubscribe();
  await close(client);
}

async function testTransactionAndBinaryBody() {
  const { client } = await connect();
  const queue = `/queue/stompjs-tx-${run}`;
  const box = inbox();
  client.subscribe(queue, box.on, { ack: "auto" });
  const tx = client.begin();
  client.publish({ destination: queue, body: "in-tx", headers: { transaction: tx.id } });
  await new Promise((r) => setTimeout(r, 300));
  assert(box.size() === 0, "a SEND inside an open transaction was delivered");
  tx.commit();
  const m = await box.next("the committed SEND");
  assert(m.body === "in-tx", `tx body ${m.body}`);
  const aborted = client.begin();
  client.publish({ destination: queue, body: "aborted", headers: { transaction: aborted.id } });
  aborted.abort();
  const binary = new Uint8Array([0, 1, 2, 0, 255, 0]);
  await sendWithReceipt(client, queue, binary, {}, true);
  const b = await box.next("the binary body");
  assert(b.isBinaryBody || b.binaryBody.length === binary.length, "binary body");
  assert(Buffer.from(b.binaryBody).equals(Buffer.from(binary)), `binary body ${Buffer.from(b.binaryBody).toString("hex")}`);
  assert(b.headers["content-length"] === String(binary.length), `content-length ${b.headers["content-length"]}`);
  await new Promise((r) => setTimeout(r, 300));
  assert(box.size() === 0, "the aborted SEND was delivered");
  await close(client);
}

async function testTopicFanOut() {
  const a = await connect();
  const b = await connect();
  const topic = `/topic/stompjs.${run}`;
  const boxA = inbox();
  const boxB = inbox();
  // A receipt on each SUBSCRIBE: both bindings exist before the SEND.
  const subscribed = (c, box, id) => {
    const receipt = `sub-${id}`;
    const done = new Promise((r) => c.client.watchForReceipt(receipt, r));
    c.client.subscribe(topic, box.on, { id, receipt });
    return within(done, `RECEIPT ${receipt}`);
  };
  await subscribed(a, boxA, "a");
  await subscribed(b, boxB, "b");
  await sendWithReceipt(a.client, topic, "to-all");
  assert((await boxA.next("fan-out to a")).body === "to-all", "a got it");
  assert((await boxB.next("fan-out to b")).body === "to-all", "b got it");
  await close(a.client);
  await close(b.client);
}

async function testHeartbeats() {
  let beats = 0;
  const { client, frame } = await connect({ heartbeatIncoming: 500, heartbeatOutgoing: 500 });
  assert(frame.headers["heart-beat"] !== "0,0", `heart-beat ${frame.headers["heart-beat"]}`);
  const ws = client.webSocket;
  ws.addEventListener("message", (ev) => {
    const data = typeof ev.data === "string" ? ev.data : Buffer.from(ev.data).toString();
    if (data === "\n" || data === "\r\n") beats += 1;
  });
  // The server offers 10 s both ways, so each side beats every 10 s (the
  // larger of the two offers, as the spec says): silent past that, the
  // connection stays up on heart-beats alone and the server's arrive.
  await new Promise((r) => setTimeout(r, 11500));
  assert(client.connected, "closed while heart-beating");
  assert(beats >= 1, `server heart-beats seen: ${beats}`);
  await sendWithReceipt(client, `/queue/stompjs-hb-${run}`, "still-here");
  await close(client);
}

async function testErrorFrame() {
  const { client } = await connect();
  const error = new Promise((r) => {
    client.onStompError = (frame) => r(frame);
  });
  client.subscribe(`/amq/queue/stompjs-missing-${run}`, () => {});
  const frame = await within(error, "an ERROR frame");
  assert(frame.headers.message && frame.headers.message.length > 0, "ERROR frame without a message");
  await close(client);
  // The server is still serving others.
  const { client: other } = await connect();
  await sendWithReceipt(other, `/queue/stompjs-after-error-${run}`, "ok");
  await close(other);
}

const tests = [testQueueAcksAndNack, testTransactionAndBinaryBody, testTopicFanOut, testHeartbeats, testErrorFrame];
for (const t of tests) {
  await t();
  console.log(`ok ${t.name}`);
}
console.log(`stompjs over WebSocket: ${tests.length} passed`);
process.exit(0);
