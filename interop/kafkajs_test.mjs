// KafkaJS (a pure JavaScript client, independent of librdkafka and of the
// Python clients): admin, an idempotent producer, a consumer group that
// commits, and a transaction committed and one aborted, read back with a
// read_committed group consumer.
import { Kafka, logLevel } from "kafkajs";

process.env.KAFKAJS_NO_PARTITIONER_WARNING = "1";

const brokers = [process.env.BOOTSTRAP];
const kafka = new Kafka({ clientId: "kafkajs-interop", brokers, logLevel: logLevel.WARN, retry: { retries: 5 } });
const topic = `kafkajs-${process.pid}`;
const N = 200;

function assert(cond, msg) {
  if (!cond) throw new Error(msg);
}

async function consumeAll(groupId, expected, readUncommitted) {
  const consumer = kafka.consumer({ groupId, readUncommitted, sessionTimeout: 10000, heartbeatInterval: 500 });
  await consumer.connect();
  await consumer.subscribe({ topic, fromBeginning: true });
  const got = [];
  await consumer.run({ eachMessage: async ({ message }) => { got.push(message.value.toString()); } });
  const deadline = Date.now() + 60000;
  while (got.length < expected && Date.now() < deadline) await new Promise((r) => setTimeout(r, 100));
  await new Promise((r) => setTimeout(r, 1500)); // nothing more arrives
  await consumer.disconnect();
  return got;
}

const admin = kafka.admin();
await admin.connect();
await admin.createTopics({ topics: [{ topic, numPartitions: 3 }], waitForLeaders: true });
const topics = await admin.listTopics();
assert(topics.includes(topic), `topic missing from ${topics}`);

const producer = kafka.producer({ idempotent: true, maxInFlightRequests: 1 });
await producer.connect();
await producer.send({ topic, messages: Array.from({ length: N }, (_, i) => ({ key: `k${i % 7}`, value: `plain-${i}` })) });
await producer.disconnect();

const txProducer = kafka.producer({ transactionalId: `kafkajs-tx-${process.pid}`, idempotent: true, maxInFlightRequests: 1 });
await txProducer.connect();
let tx = await txProducer.transaction();
await tx.send({ topic, messages: Array.from({ length: 50 }, (_, i) => ({ key: "t", value: `committed-${i}` })) });
await tx.commit();
tx = await txProducer.transaction();
await tx.send({ topic, messages: Array.from({ length: 50 }, (_, i) => ({ key: "t", value: `aborted-${i}` })) });
await tx.abort();
await txProducer.disconnect();

const committed = await consumeAll(`kafkajs-rc-${process.pid}`, N + 50, false);
assert(committed.length === N + 50, `read_committed saw ${committed.length}, want ${N + 50}`);
assert(!committed.some((v) => v.startsWith("aborted-")), "read_committed saw aborted records");
const offsets = await admin.fetchOffsets({ groupId: `kafkajs-rc-${process.pid}`, topics: [topic] });
const sum = offsets[0].partitions.reduce((s, p) => s + Number(p.offset), 0);
assert(sum >= N + 50, `committed offsets sum ${sum}`);
const all = await consumeAll(`kafkajs-ru-${process.pid}`, N + 100, true);
assert(all.length === N + 100, `read_uncommitted saw ${all.length}, want ${N + 100}`);
await admin.deleteTopics({ topics: [topic] });
await admin.disconnect();
console.log(`kafkajs: ok (${committed.length} committed records, offsets committed ${sum})`);
