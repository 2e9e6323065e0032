"""Consumer groups against Ferry with real subscriptions (subscribe(), never assign()).

Parts (each runs in its own child process with its own time limit, so one hang
does not hide the others):

  ck_resume      confluent-kafka: group, enable.auto.commit=false, a synchronous
                 commit after every record; consume part of 100 records, close; a
                 new consumer in the group resumes right after the last commit.
  ck_split       confluent-kafka: two consumers in one group on a 4-partition topic
                 get 2 partitions each and read everything between them; when one
                 leaves the other takes all 4; a second group reads everything again.
  kp_admin       kafka-python: auto-committing group consumer reads all; admin
                 ListGroups / OffsetFetch / DescribeGroups / OffsetDelete / DeleteGroups.
  aio_defaults   aiokafka with default settings: subscribe, read all, commit; a fresh
                 consumer in the group finds nothing left, then only new records.
  mixed          one consumer of each library in one group on 6 partitions: the broker
                 must pick roundrobin (the only assignor all three offer), 2 partitions each.

Every group uses the broker's default group.initial.rebalance.delay.ms (3 s).

Usage: groups_test.py [PART ...]   (no argument: every part, each in a child process)
Debugging: GROUPS_DEBUG=1 turns on librdkafka `cgrp,protocol` debug and DEBUG
logging for kafka-python and aiokafka (CK_DEBUG=contexts overrides the librdkafka set).
"""
import asyncio
import logging
import os
import subprocess
import sys
import time
import uuid
from collections import Counter, defaultdict

from confluent_kafka import Consumer, KafkaError, KafkaException, Producer, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic

BOOTSTRAP = os.environ["BOOTSTRAP"]
RUN = uuid.uuid4().hex[:8]
PART_TIMEOUT = float(os.environ.get("GROUPS_PART_TIMEOUT", "75"))
DEBUG = bool(os.environ.get("GROUPS_DEBUG"))
CK_DEBUG = os.environ.get("CK_DEBUG") or ("cgrp,protocol" if DEBUG else "")
CK_COMMON = {"bootstrap.servers": BOOTSTRAP, **({"debug": CK_DEBUG} if CK_DEBUG else {})}
if DEBUG:
    logging.basicConfig(level=logging.DEBUG, format="%(asctime)s %(name)s %(levelname)s %(message)s")

_part = "groups"


def step(msg):
    print(f"[groups:{_part}] {time.strftime('%H:%M:%S')} {msg}", flush=True)


def check(cond, msg):
    if not cond:
        raise AssertionError(msg)


# --- helpers (confluent-kafka admin + producer) -------------------------------

def create_topic(name, partitions):
    admin = AdminClient(CK_COMMON)
    for fut in admin.create_topics([NewTopic(name, partitions, 1)], operation_timeout=10).values():
        fut.result(timeout=15)
    deadline = time.time() + 10
    while True:
        md = admin.list_topics(topic=name, timeout=10).topics.get(name)
        if md is not None and md.error is None and len(md.partitions) == partitions:
            return
        check(time.time() < deadline, f"topic {name} not in metadata with {partitions} partitions: {md}")
        time.sleep(0.2)


def produce(topic, values, partitions):
    """Produce `values` round-robin over the partitions with a default-settings
    Producer; returns {value: (partition, offset)}."""
    p = Producer(CK_COMMON)
    done, errors = {}, []

    def on_delivery(err, msg):
        if err:
            errors.append(err)
        else:
            done[msg.value().decode()] = (msg.partition(), msg.offset())

    for i, v in enumerate(values):
        p.produce(topic, value=v, partition=i % partitions, on_delivery=on_delivery)
        p.poll(0)
    check(p.flush(30) == 0, "producer flush left messages undelivered")
    check(not errors, f"delivery errors: {errors[:5]}")
    check(len(done) == len(values), f"delivered {len(done)} of {len(values)}")
    return done


def end_offsets(delivered):
    ends = defaultdict(int)
    for p, o in delivered.values():
        ends[p] = max(ends[p], o + 1)
    return dict(ends)


def ck_poll(c, timeout):
    m = c.poll(timeout)
    if m is None:
        return None
    if m.error():
        if m.error().code() == KafkaError._PARTITION_EOF:
            return None
        raise KafkaException(m.error())
    return m


# --- 1. confluent-kafka: commit after every record, resume --------------------

def part_ck_resume():
    topic, group, parts, n, first_batch = f"grp-resume-{RUN}", "test-group", 3, 100, 40
    # The brief's seed scenario names the group `test-group`; a run-unique suffix keeps
    # reruns against the same broker independent.
    group = f"{group}-{RUN}"
    create_topic(topic, parts)
    delivered = produce(topic, [f"r-{i}" for i in range(n)], parts)
    conf = {**CK_COMMON, "group.id": group, "enable.auto.commit": False, "auto.offset.reset": "earliest"}

    step(f"consumer 1 subscribes {topic} in group {group}; reads {first_batch}, sync commit after each")
    c1 = Consumer(conf)
    c1.subscribe([topic])
    seen1, committed = [], {}
    deadline = time.time() + 30
    while len(seen1) < first_batch:
        check(time.time() < deadline, f"consumer 1 read only {len(seen1)} of {first_batch} in 30 s "
              f"(assignment {c1.assignment()})")
        m = ck_poll(c1, 0.5)
        if m is None:
            continue
        seen1.append((m.partition(), m.offset(), m.value().decode()))
        res = c1.commit(message=m, asynchronous=False)
        bad = [tp for tp in (res or []) if tp.error is not None]
        check(not bad, f"commit of p{m.partition()}@{m.offset()} failed: {bad}")
        committed[m.partition()] = m.offset() + 1
    step(f"  consumer 1 read {len(seen1)}, committed {dict(sorted(committed.items()))}; closing")
    c1.close()

    step("consumer 2 joins the same group")
    c2 = Consumer(conf)
    fetched = c2.committed([TopicPartition(topic, p) for p in range(parts)], timeout=10)
    fetched = {tp.partition: tp.offset for tp in fetched if tp.offset >= 0}
    check(fetched == committed, f"OffsetFetch gives {fetched}, consumer 1 committed {committed}")
    c2.subscribe([topic])
    seen2 = []
    deadline = time.time() + 30
    while len(seen1) + len(seen2) < n:
        check(time.time() < deadline, f"consumer 2 read {len(seen2)}; {n - len(seen1) - len(seen2)} "
              f"records missing after 30 s (assignment {c2.assignment()})")
        m = ck_poll(c2, 0.5)
        if m is None:
            continue
        seen2.append((m.partition(), m.offset(), m.value().decode()))
        res = c2.commit(message=m, asynchronous=False)
        check(not [tp for tp in (res or []) if tp.error is not None], f"commit failed: {res}")
    # A little longer: anything more would be a duplicate.
    end = time.time() + 2
    while time.time() < end:
        m = ck_poll(c2, 0.2)
        if m is not None:
            seen2.append((m.partition(), m.offset(), m.value().decode()))
    c2.close()

    first2 = {}
    for p, o, _ in seen2:
        first2.setdefault(p, o)
    for p, o in first2.items():
        check(o == committed.get(p, 0), f"p{p}: consumer 2 started at offset {o}, last commit was "
              f"{committed.get(p, 'none')}")
    counts = Counter(v for _, _, v in seen1 + seen2)
    dups = sorted(v for v, k in counts.items() if k > 1)
    missing = sorted(set(delivered) - set(counts))
    check(not dups and not missing, f"duplicates {dups[:10]}, missing {missing[:10]}")
    step(f"  consumer 2 resumed at {dict(sorted(first2.items()))}, read {len(seen2)}; "
         f"{n} records seen exactly once")


# --- 2. confluent-kafka: two members split 4 partitions ----------------------

def part_ck_split():
    topic, group, parts = f"grp-split-{RUN}", f"grp-split-{RUN}", 4
    create_topic(topic, parts)
    delivered = produce(topic, [f"a-{i}" for i in range(200)], parts)
    conf = {**CK_COMMON, "group.id": group, "auto.offset.reset": "earliest"}

    step(f"two consumers subscribe {topic} in group {group}")
    cs = [Consumer(conf), Consumer(conf)]
    for c in cs:
        c.subscribe([topic])
    got = [[], []]

    def poll_both(t=0.1):
        for i, c in enumerate(cs):
            m = ck_poll(c, t)
            if m is not None:
                got[i].append((m.partition(), m.value().decode()))

    def assignments():
        return [sorted(tp.partition for tp in c.assignment()) for c in cs]

    deadline = time.time() + 40
    while True:
        poll_both()
        a = assignments()
        seen = {v for g in got for _, v in g}
        if (len(a[0]) == 2 and len(a[1]) == 2 and sorted(a[0] + a[1]) == list(range(parts))
                and seen >= set(delivered)):
            break
        check(time.time() < deadline, f"after 40 s: assignments {a}, read {len(seen)} of "
              f"{len(delivered)} distinct records")
    step(f"  assignments {a}; read {len(got[0])} + {len(got[1])} records")
    dup = sum(len(g) for g in got) - len({v for g in got for _, v in g})
    if dup:
        step(f"  note: {dup} records were read twice (a rebalance happened mid-way)")

    step("produce 100 more; each must go to the member owning its partition, exactly once")
    owner = {p: i for i, ps in enumerate(a) for p in ps}
    got = [[], []]
    more = produce(topic, [f"b-{i}" for i in range(100)], parts)
    deadline = time.time() + 20
    while len({v for g in got for _, v in g}) < len(more):
        check(time.time() < deadline, f"read {len({v for g in got for _, v in g})} of {len(more)} new records")
        poll_both()
    end = time.time() + 1.5
    while time.time() < end:
        poll_both()
    check(assignments() == a, f"assignment changed: {a} -> {assignments()}")
    for i, g in enumerate(got):
        wrong = [(p, v) for p, v in g if owner[p] != i]
        check(not wrong, f"consumer {i} got records of partitions it does not own: {wrong[:5]}")
    vals = [v for g in got for _, v in g]
    check(sorted(vals) == sorted(more), f"{len(vals)} records read for {len(more)} produced "
          f"(duplicates {[v for v, k in Counter(vals).items() if k > 1][:5]})")

    step("consumer 1 leaves; consumer 0 must take all 4 partitions")
    cs[1].close()
    cs = cs[:1]
    got = [[]]
    deadline = time.time() + 30
    while sorted(tp.partition for tp in cs[0].assignment()) != list(range(parts)):
        check(time.time() < deadline, f"30 s after the other member left, assignment is "
              f"{sorted(tp.partition for tp in cs[0].assignment())}")
        poll_both(0.2)
    step(f"  consumer 0 now has {sorted(tp.partition for tp in cs[0].assignment())}")
    last = produce(topic, [f"c-{i}" for i in range(40)], parts)
    deadline = time.time() + 20
    while not {v for _, v in got[0]} >= set(last):
        check(time.time() < deadline, f"sole member read {len({v for _, v in got[0]} & set(last))} "
              f"of {len(last)} records produced after the rebalance")
        poll_both(0.2)
    cs[0].close()

    everything = {**delivered, **more, **last}
    group2 = f"{group}-again"
    step(f"a second group {group2} reads all {len(everything)} records again")
    c = Consumer({**conf, "group.id": group2})
    c.subscribe([topic])
    got2 = []
    deadline = time.time() + 30
    while len(got2) < len(everything):
        check(time.time() < deadline, f"second group read {len(got2)} of {len(everything)}")
        m = ck_poll(c, 0.5)
        if m is not None:
            got2.append(m.value().decode())
    end = time.time() + 1.5
    while time.time() < end:
        m = ck_poll(c, 0.2)
        if m is not None:
            got2.append(m.value().decode())
    check(sorted(got2) == sorted(everything), f"second group: {len(got2)} records, "
          f"{len(set(got2))} distinct, expected {len(everything)}")
    check(sorted(tp.partition for tp in c.assignment()) == list(range(parts)), "second group assignment")
    c.close()  # auto-commits

    step("confluent-kafka AdminClient: list / describe / offsets / delete both groups")
    from confluent_kafka import ConsumerGroupState, ConsumerGroupTopicPartitions
    admin = AdminClient(CK_COMMON)
    res = admin.list_consumer_groups(request_timeout=10).result(timeout=15)
    check(not res.errors, f"list_consumer_groups errors: {res.errors}")
    listed = {g.group_id: g for g in res.valid}
    check(group in listed and group2 in listed, f"groups not listed: {sorted(listed)}")
    check(listed[group2].state == ConsumerGroupState.EMPTY, f"{group2} listed as {listed[group2].state}")
    res = admin.list_consumer_groups(request_timeout=10, states={ConsumerGroupState.STABLE}).result(timeout=15)
    check(group2 not in {g.group_id for g in res.valid}, f"states=STABLE filter lists the empty {group2}")
    for gid, fut in admin.describe_consumer_groups([group, group2], request_timeout=10).items():
        d = fut.result(timeout=15)
        check(d.state == ConsumerGroupState.EMPTY and not d.members, f"describe {gid}: {d.state} {d.members}")
    ends = end_offsets(everything)
    fut = admin.list_consumer_group_offsets([ConsumerGroupTopicPartitions(group2)], request_timeout=10)[group2]
    offs = {tp.partition: tp.offset for tp in fut.result(timeout=15).topic_partitions if tp.topic == topic}
    check(offs == ends, f"{group2} committed {offs}, end offsets {ends}")
    for gid, fut in admin.delete_consumer_groups([group, group2], request_timeout=10).items():
        fut.result(timeout=15)
    res = admin.list_consumer_groups(request_timeout=10).result(timeout=15)
    check(not {group, group2} & {g.group_id for g in res.valid}, "deleted groups still listed")
    step(f"  {group2} committed {offs} == end offsets; both groups deleted")


# --- 3. kafka-python: auto-commit consumer + group admin ---------------------

def part_kp_admin():
    from kafka import KafkaAdminClient, KafkaConsumer
    from kafka import TopicPartition as KTP
    from kafka import errors as Errors

    topic, group, parts, n = f"grp-kp-{RUN}", f"grp-kp-{RUN}", 2, 100
    create_topic(topic, parts)
    delivered = produce(topic, [f"k-{i}" for i in range(n)], parts)
    ends = end_offsets(delivered)

    step(f"KafkaConsumer(group_id={group}, enable_auto_commit=True, auto_commit_interval_ms=1000)")
    consumer = KafkaConsumer(topic, bootstrap_servers=BOOTSTRAP, group_id=group, enable_auto_commit=True,
                             auto_commit_interval_ms=1000, auto_offset_reset="earliest")
    got = []
    deadline = time.time() + 30
    while len(got) < n:
        check(time.time() < deadline, f"read {len(got)} of {n} in 30 s (assignment {consumer.assignment()})")
        for records in consumer.poll(timeout_ms=500).values():
            got.extend(r.value.decode() for r in records)
    check(sorted(got) == sorted(delivered), f"read {len(got)} records, {len(set(got))} distinct")
    step(f"  read {len(got)}; assignment {sorted(consumer.assignment())}")

    admin = KafkaAdminClient(bootstrap_servers=BOOTSTRAP, request_timeout_ms=10000)
    step("describe_groups while the member is active")
    d = admin.describe_groups([group])[group]
    step(f"  {d.get('group_state')} {d.get('protocol_type')}/{d.get('protocol_data')} "
         f"members={len(d.get('members', []))}")
    check(d.get("error") is None, f"describe error: {d}")
    check(d.get("group_state") == "Stable", f"state {d.get('group_state')}, expected Stable: {d}")
    check(d.get("protocol_type") == "consumer", f"protocol_type: {d}")
    check(len(d["members"]) == 1, f"members: {d['members']}")
    asg = d["members"][0]["member_assignment"]
    if not isinstance(asg, dict):  # kafka-python decodes it; to_dict() when available
        asg = asg.to_dict() if hasattr(asg, "to_dict") else {"raw": asg}
    asg_parts = sorted(p for t in asg.get("assigned_partitions") or [] if t["topic"] == topic
                       for p in t["partitions"])
    step(f"  member assignment: {asg}")
    check(asg_parts == list(range(parts)), f"decoded member assignment {asg!r}")

    step("delete_groups while the member is active must fail with NON_EMPTY_GROUP (68)")
    res = admin.delete_groups([group])
    check(res.get(group) == Errors.for_code(68).__name__, f"delete_groups on active group: {res}")

    step("close (commits) and check the admin view")
    consumer.close()
    listed = {g["group_id"]: g for g in admin.list_groups()}
    check(group in listed, f"list_groups does not list {group}: {sorted(listed)}")
    step(f"  list_groups: {listed[group]}")
    check(listed[group].get("protocol_type") == "consumer", f"listed group: {listed[group]}")
    offsets = admin.list_group_offsets(group)[group]
    got_offsets = {tp.partition: om.offset for tp, om in offsets.items() if tp.topic == topic}
    check(got_offsets == ends, f"committed offsets {got_offsets}, end offsets {ends}")
    step(f"  committed offsets {got_offsets} == end offsets")
    d = admin.describe_groups([group])[group]
    check(d.get("error") is None and d.get("group_state") == "Empty" and not d.get("members"),
          f"after close: {d}")

    step("delete_group_offsets (OffsetDelete) for partition 0")
    res = admin.delete_group_offsets(group, [KTP(topic, 0)])
    step(f"  {res}")
    offsets = admin.list_group_offsets(group)[group]
    left = {tp.partition: om.offset for tp, om in offsets.items() if tp.topic == topic and om.offset >= 0}
    check(left == {p: o for p, o in ends.items() if p != 0}, f"after OffsetDelete p0: {left}")

    step("delete_groups")
    res = admin.delete_groups([group])
    check(res == {group: "OK"}, f"delete_groups: {res}")
    listed = {g["group_id"] for g in admin.list_groups()}
    check(group not in listed, f"{group} still listed after delete")
    offsets = admin.list_group_offsets(group)[group]
    check(all(om.offset < 0 for om in offsets.values()), f"offsets survive the delete: {offsets}")
    d = admin.describe_groups([group])[group]
    check(d.get("group_state") == "Dead", f"deleted group describes as {d}")
    admin.close()


# --- 4. aiokafka: defaults, commit, fresh consumer finds nothing --------------

def part_aio_defaults():
    from aiokafka import AIOKafkaConsumer
    from aiokafka import TopicPartition as ATP

    topic, group, parts = f"grp-aio-{RUN}", f"grp-aio-{RUN}", 2
    create_topic(topic, parts)
    tps = [ATP(topic, p) for p in range(parts)]

    async def wait_assigned(c, what):
        deadline = time.time() + 30
        while sorted(c.assignment()) != tps:
            check(time.time() < deadline, f"{what}: assignment after 30 s is {c.assignment()}")
            await c.getmany(timeout_ms=200)
        # position() resolves the starting offset (committed, or auto_offset_reset=latest).
        return {tp.partition: await asyncio.wait_for(c.position(tp), 15) for tp in tps}

    async def read(c, n, secs):
        got = []
        deadline = time.time() + secs
        while time.time() < deadline and (n is None or len(got) < n):
            for msgs in (await c.getmany(timeout_ms=300)).values():
                got.extend(m.value.decode() for m in msgs)
        return got

    async def main():
        step(f"AIOKafkaConsumer(group_id={group}) with default settings subscribes {topic}")
        c = AIOKafkaConsumer(topic, bootstrap_servers=BOOTSTRAP, group_id=group)
        await c.start()
        try:
            pos = await wait_assigned(c, "consumer 1")
            step(f"  assigned; positions {pos}")
            check(pos == {p: 0 for p in range(parts)}, f"positions of an empty topic: {pos}")
            delivered = await asyncio.to_thread(produce, topic, [f"x-{i}" for i in range(100)], parts)
            got = await read(c, len(delivered), 30)
            check(sorted(got) == sorted(delivered), f"read {len(got)} of {len(delivered)}")
            await c.commit()
            committed = {tp.partition: await c.committed(tp) for tp in tps}
            ends = end_offsets(delivered)
            check(committed == ends, f"committed {committed}, end offsets {ends}")
            step(f"  read {len(got)}; committed {committed}")
        finally:
            await c.stop()

        step("a fresh consumer in the group finds nothing left")
        c = AIOKafkaConsumer(topic, bootstrap_servers=BOOTSTRAP, group_id=group)
        await c.start()
        try:
            pos = await wait_assigned(c, "consumer 2")
            check(pos == ends, f"fresh consumer positions {pos}, committed {ends}")
            leftover = await read(c, None, 2)
            check(not leftover, f"fresh consumer read {len(leftover)} old records: {leftover[:5]}")
            new = await asyncio.to_thread(produce, topic, [f"y-{i}" for i in range(10)], parts)
            got = await read(c, len(new), 20)
            got += await read(c, None, 1)
            check(sorted(got) == sorted(new), f"fresh consumer read {got}, expected only {sorted(new)}")
            step(f"  positions {pos}; nothing old, then exactly the {len(new)} new records")
        finally:
            await c.stop()

    asyncio.run(main())


# --- 5. one group, three client libraries: the broker picks the common assignor ---

def part_mixed():
    import threading

    from aiokafka import AIOKafkaConsumer
    from kafka import KafkaAdminClient, KafkaConsumer

    topic, group, parts = f"grp-mixed-{RUN}", f"grp-mixed-{RUN}", 6
    create_topic(topic, parts)
    delivered = produce(topic, [f"m-{i}" for i in range(300)], parts)
    stop = threading.Event()
    lock = threading.Lock()
    got = {"ck": [], "kp": [], "aio": []}
    assigned = {"ck": [], "kp": [], "aio": []}
    errors = []

    def record(name, items, assignment):
        with lock:
            got[name].extend(items)
            assigned[name] = sorted(assignment)

    # Each client polls in its own thread: a client blocked in JoinGroup must not keep
    # the others from rejoining (aiokafka's getmany() waits out a rebalance, and
    # librdkafka only rejoins once poll() serves the revoke). No auto-commit: the
    # members leave one after another, and commit-on-close would only race the
    # rebalance each departure starts.
    def run_ck():
        c = Consumer({**CK_COMMON, "group.id": group, "auto.offset.reset": "earliest",
                      "enable.auto.commit": False})
        c.subscribe([topic])
        try:
            while not stop.is_set():
                m = ck_poll(c, 0.1)
                record("ck", [] if m is None else [(m.partition(), m.value().decode())],
                       [tp.partition for tp in c.assignment()])
        finally:
            c.close()

    def run_kp():
        c = KafkaConsumer(topic, bootstrap_servers=BOOTSTRAP, group_id=group, auto_offset_reset="earliest",
                          enable_auto_commit=False)
        try:
            while not stop.is_set():
                recs = [(r.partition, r.value.decode()) for rs in c.poll(timeout_ms=100).values() for r in rs]
                record("kp", recs, [tp.partition for tp in c.assignment()])
        finally:
            c.close()

    def run_aio():
        async def go():
            c = AIOKafkaConsumer(topic, bootstrap_servers=BOOTSTRAP, group_id=group, auto_offset_reset="earliest",
                                 enable_auto_commit=False)
            await c.start()
            try:
                while not stop.is_set():
                    msgs = await c.getmany(timeout_ms=100)
                    record("aio", [(m.partition, m.value.decode()) for ms in msgs.values() for m in ms],
                           [tp.partition for tp in c.assignment()])
            finally:
                await c.stop()
        asyncio.run(go())

    def guarded(fn, name):
        def run():
            try:
                fn()
            except Exception as e:  # noqa: BLE001
                errors.append(f"{name}: {type(e).__name__}: {e}")
        return threading.Thread(target=run, name=name, daemon=True)

    step(f"confluent-kafka (range,roundrobin) + kafka-python (range,roundrobin) + aiokafka "
         f"(roundrobin) join group {group}: only roundrobin is common")
    threads = [guarded(run_ck, "ck"), guarded(run_kp, "kp"), guarded(run_aio, "aio")]
    for t in threads:
        t.start()
    try:
        deadline = time.time() + 45
        while True:
            time.sleep(0.2)
            with lock:
                a = {k: list(v) for k, v in assigned.items()}
                seen = {v for g in got.values() for _, v in g}
            check(not errors, f"consumer thread failed: {errors}")
            if (all(len(ps) == 2 for ps in a.values()) and sorted(sum(a.values(), [])) == list(range(parts))
                    and seen >= set(delivered)):
                break
            check(time.time() < deadline, f"after 45 s: assignments {a}, read {len(seen)} of "
                  f"{len(delivered)} distinct records")
        with lock:
            step(f"  assignments {a}; read " + ", ".join(f"{k} {len(v)}" for k, v in got.items()))
            for k, g in got.items():
                wrong = [(p, v) for p, v in g if p not in a[k]]
                if wrong:
                    step(f"  note: {k} read {len(wrong)} records of partitions it no longer owns "
                         f"(rebalance mid-way)")
        admin = KafkaAdminClient(bootstrap_servers=BOOTSTRAP, request_timeout_ms=10000)
        d = admin.describe_groups([group])[group]
        admin.close()
        step(f"  describe: {d.get('group_state')} {d.get('protocol_type')}/{d.get('protocol_data')} "
             f"members={len(d.get('members', []))}")
        check(d.get("group_state") == "Stable" and d.get("protocol_data") == "roundrobin"
              and len(d.get("members", [])) == 3, f"describe_groups: {d}")
    finally:
        stop.set()
        for t in threads:
            t.join(20)
    check(not any(t.is_alive() for t in threads), "a consumer did not close within 20 s")
    check(not errors, f"consumer thread failed: {errors}")


PARTS = {
    "ck_resume": part_ck_resume,
    "ck_split": part_ck_split,
    "kp_admin": part_kp_admin,
    "aio_defaults": part_aio_defaults,
    "mixed": part_mixed,
}


def run_one(name):
    global _part
    _part = name
    t0 = time.time()
    try:
        PARTS[name]()
    except Exception as e:  # noqa: BLE001 - one-line reason, exit non-zero
        step(f"FAIL after {time.time() - t0:.1f} s: {type(e).__name__}: {e}")
        return 1
    step(f"OK in {time.time() - t0:.1f} s")
    return 0


def main(argv):
    names = argv or list(PARTS)
    unknown = [n for n in names if n not in PARTS]
    if unknown:
        print(f"unknown part(s) {unknown}; parts: {list(PARTS)}", file=sys.stderr)
        return 2
    if len(names) == 1:
        return run_one(names[0])
    failed = []
    for name in names:
        try:
            rc = subprocess.run([sys.executable, __file__, name], timeout=PART_TIMEOUT).returncode
        except subprocess.TimeoutExpired:
            print(f"[groups:{name}] FAIL: no result within {PART_TIMEOUT:.0f} s (hang)", flush=True)
            rc = 1
        if rc:
            failed.append(name)
    print(f"[groups] {len(names) - len(failed)} of {len(names)} parts passed"
          + (f"; failed: {' '.join(failed)}" if failed else ""), flush=True)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
