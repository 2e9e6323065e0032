//! The Kafka front-end reads the metadata image: a hand-built two-node
//! image (node 2 exists only in the image) places partitions and
//! coordinators on the other node, and this node answers as a member of a
//! cluster: live nodes only, NOT_LEADER_OR_FOLLOWER with KIP-951 hints,
//! NOT_COORDINATOR and FindCoordinator pointing at node 2.

use std::collections::BTreeMap;
use std::sync::Arc;

use bytes::Bytes;
use ferry_broker::metadata::{GROUP_TOPIC, MetadataRecord, NodeInfo, TXN_TOPIC, coordinator_partition, listener};
use ferry_broker::testing::{INTERNAL_PARTITIONS, TestController};
use ferry_broker::{Broker, BrokerConfig};
use ferry_records::compression::Compression;
use ferry_records::records::{NewRecord, build_batch};
use kafka_protocol::messages::*;
use kafka_protocol::protocol::StrBytes;

const NOT_LEADER: i16 = 6;
const UNKNOWN_TOPIC_OR_PARTITION: i16 = 3;
const REQUEST_TIMED_OUT: i16 = 7;
const COORDINATOR_NOT_AVAILABLE: i16 = 15;
const NOT_COORDINATOR: i16 = 16;
const INVALID_REPLICATION_FACTOR: i16 = 38;

mod support;
use support::Client;

fn name(s: &str) -> TopicName {
    TopicName(StrBytes::from_string(s.to_string()))
}

fn node(id: i32, kafka: &str, rack: Option<&str>) -> NodeInfo {
    NodeInfo {
        id,
        incarnation: uuid::Uuid::new_v4(),
        listeners: [(listener::KAFKA.to_string(), kafka.to_string())].into(),
        rack: rack.map(str::to_string),
        voter: true,
        fenced: false,
    }
}

fn batch() -> Bytes {
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_millis() as i64;
    let rec = NewRecord { key: Some(b"k"), value: Some(b"v"), headers: vec![], timestamp: now };
    Bytes::from(build_batch(&[rec], Compression::None, -1, -1, -1).unwrap())
}

/// A group id whose `__consumer_offsets` partition satisfies `want`.
fn group_on(want: impl Fn(i32) -> bool) -> String {
    (0..).map(|i| format!("group-{i}")).find(|g| want(coordinator_partition(g, INTERNAL_PARTITIONS).unwrap())).unwrap()
}

struct Cluster {
    _dir: tempfile::TempDir,
    broker: Arc<Broker>,
    controller: Arc<TestController>,
    client: Client,
    /// Node 1's advertised Kafka address.
    port: i32,
}

/// Node 1 serving Kafka, with node 2 (rack r2) and a fenced node 3 in the
/// image; topic "split" has partition 0 on node 2 and partition 1 here.
async fn start() -> Cluster {
    let dir = tempfile::tempdir().unwrap();
    let broker = Broker::open(BrokerConfig { data_dir: dir.path().to_path_buf(), ..BrokerConfig::default() }).unwrap();
    let controller = ferry_broker::testing::install(&broker);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = i32::from(listener.local_addr().unwrap().port());
    controller
        .apply(vec![
            MetadataRecord::RegisterNode(node(1, &format!("127.0.0.1:{port}"), Some("r1"))),
            MetadataRecord::RegisterNode(node(2, "node2.example:19092", Some("r2"))),
            MetadataRecord::RegisterNode(node(3, "node3.example:19093", None)),
            MetadataRecord::FenceNode { node_id: 3 },
            MetadataRecord::CreateTopic {
                name: "split".into(),
                id: uuid::Uuid::new_v4(),
                internal: false,
                configs: BTreeMap::new(),
                replicas: vec![vec![2], vec![1, 2]],
            },
        ])
        .unwrap();
    // Advertised elsewhere on purpose: the image's address is the one answered.
    let config = ferry_kafka::KafkaConfig { advertised_host: "wrong.example".into(), ..Default::default() };
    let ctx = Arc::new(ferry_kafka::Ctx { broker: broker.clone(), config });
    let (stop, rx) = tokio::sync::watch::channel(false);
    std::mem::forget(stop);
    tokio::spawn(ferry_kafka::serve(listener, ctx, rx));
    let client = Client::connect(port as u16, "cluster-test").await;
    Cluster { _dir: dir, broker, controller, client, port }
}

/// Moves the leadership of `topic`'s partition `index` to node 2.
fn lead_on_2(controller: &TestController, topic: &str, index: i32) {
    let id = controller.image().topic(topic).unwrap().id;
    controller
        .apply(vec![MetadataRecord::PartitionChange {
            topic_id: id,
            partition: index,
            leader: 2,
            isr: vec![2],
            replicas: Some(vec![2]),
            elr: None,
        }])
        .unwrap();
}

#[tokio::test]
async fn metadata_and_describe_cluster_list_live_nodes_and_leaders_from_the_image() {
    let mut c = start().await;
    let ResponseKind::Metadata(m) =
        c.client.call(ApiKey::Metadata, 12, RequestKind::Metadata(MetadataRequest::default().with_topics(None))).await
    else {
        unreachable!()
    };
    let brokers: Vec<(i32, String, i32, Option<String>)> = m
        .brokers
        .iter()
        .map(|b| (b.node_id.0, b.host.to_string(), b.port, b.rack.as_ref().map(std::string::ToString::to_string)))
        .collect();
    assert_eq!(
        brokers,
        vec![
            (1, "127.0.0.1".to_string(), c.port, Some("r1".to_string())),
            (2, "node2.example".to_string(), 19092, Some("r2".to_string())),
        ],
        "live nodes only: fenced node 3 is not offered"
    );
    assert_eq!(m.controller_id.0, 1);
    let split = m.topics.iter().find(|t| t.name.as_ref().is_some_and(|n| **n == *"split")).unwrap();
    let p: Vec<(i32, i32, Vec<i32>, Vec<i32>)> = split
        .partitions
        .iter()
        .map(|p| {
            (
                p.partition_index,
                p.leader_id.0,
                p.replica_nodes.iter().map(|r| r.0).collect(),
                p.isr_nodes.iter().map(|r| r.0).collect(),
            )
        })
        .collect();
    assert_eq!(p, vec![(0, 2, vec![2], vec![2]), (1, 1, vec![1, 2], vec![1, 2])]);
    assert!(!split.is_internal);
    let internal: Vec<String> =
        m.topics.iter().filter(|t| t.is_internal).filter_map(|t| Some(t.name.as_ref()?.to_string())).collect();
    assert_eq!(internal, vec![GROUP_TOPIC, TXN_TOPIC]);

    let ResponseKind::DescribeCluster(d) = c
        .client
        .call(ApiKey::DescribeCluster, 0, RequestKind::DescribeCluster(DescribeClusterRequest::default()))
        .await
    else {
        unreachable!()
    };
    assert_eq!(d.brokers.iter().map(|b| b.broker_id.0).collect::<Vec<_>>(), vec![1, 2]);
    assert_eq!(d.controller_id.0, 1);

    // Node 2 is fenced: it leaves the list; its partition has no live leader.
    c.controller.apply(vec![MetadataRecord::FenceNode { node_id: 2 }]).unwrap();
    let ResponseKind::Metadata(m) =
        c.client.call(ApiKey::Metadata, 12, RequestKind::Metadata(MetadataRequest::default().with_topics(None))).await
    else {
        unreachable!()
    };
    assert_eq!(m.brokers.iter().map(|b| b.node_id.0).collect::<Vec<_>>(), vec![1]);
    let split = m.topics.iter().find(|t| t.name.as_ref().is_some_and(|n| **n == *"split")).unwrap();
    assert_eq!(split.partitions[0].offline_replicas.iter().map(|r| r.0).collect::<Vec<_>>(), vec![2]);

    // A leaderless partition answers LEADER_NOT_AVAILABLE.
    let id = c.controller.image().topic("split").unwrap().id;
    c.controller
        .apply(vec![MetadataRecord::PartitionChange {
            topic_id: id,
            partition: 0,
            leader: -1,
            isr: vec![2],
            replicas: None,
            elr: None,
        }])
        .unwrap();
    let ResponseKind::Metadata(m) =
        c.client.call(ApiKey::Metadata, 12, RequestKind::Metadata(MetadataRequest::default().with_topics(None))).await
    else {
        unreachable!()
    };
    let split = m.topics.iter().find(|t| t.name.as_ref().is_some_and(|n| **n == *"split")).unwrap();
    assert_eq!(
        (split.partitions[0].error_code, split.partitions[0].leader_id.0, split.partitions[0].leader_epoch),
        (5, -1, 1)
    );
}

#[tokio::test]
async fn partitions_led_elsewhere_answer_not_leader_with_hints() {
    let mut c = start().await;
    let topic_id = c.controller.image().topic("split").unwrap().id;
    let produce = |v: i16| {
        let mut t = produce_request::TopicProduceData::default().with_partition_data(
            (0..3)
                .map(|i| produce_request::PartitionProduceData::default().with_index(i).with_records(Some(batch())))
                .collect(),
        );
        if v >= 13 {
            t.topic_id = topic_id;
        } else {
            t.name = name("split");
        }
        // acks=1: node 2, in partition 1's ISR, never fetches here, so
        // acks=all would wait for it (see the timeout check below).
        RequestKind::Produce(ProduceRequest::default().with_acks(1).with_timeout_ms(5000).with_topic_data(vec![t]))
    };
    for v in [9, 10, 13] {
        let ResponseKind::Produce(r) = c.client.call(ApiKey::Produce, v, produce(v)).await else { unreachable!() };
        let parts = &r.responses[0].partition_responses;
        let codes: Vec<i16> = parts.iter().map(|p| p.error_code).collect();
        assert_eq!(codes, vec![NOT_LEADER, 0, UNKNOWN_TOPIC_OR_PARTITION], "v{v}");
        if v >= 10 {
            assert_eq!((parts[0].current_leader.leader_id.0, parts[0].current_leader.leader_epoch), (2, 0), "v{v}");
            let e: Vec<(i32, String, i32)> =
                r.node_endpoints.iter().map(|e| (e.node_id.0, e.host.to_string(), e.port)).collect();
            assert_eq!(e, vec![(2, "node2.example".to_string(), 19092)], "v{v}");
        }
    }

    // acks=all waits for the ISR (node 2 too), which never fetches: the
    // produce times out as Kafka's does, and nobody reads past the high
    // watermark meanwhile.
    let t = produce_request::TopicProduceData::default().with_name(name("split")).with_partition_data(vec![
        produce_request::PartitionProduceData::default().with_index(1).with_records(Some(batch())),
    ]);
    let all = ProduceRequest::default().with_acks(-1).with_timeout_ms(300).with_topic_data(vec![t]);
    let ResponseKind::Produce(r) = c.client.call(ApiKey::Produce, 9, RequestKind::Produce(all)).await else {
        unreachable!()
    };
    assert_eq!(r.responses[0].partition_responses[0].error_code, REQUEST_TIMED_OUT);
    let local = c.broker.topic("split").unwrap().partition(1).unwrap();
    assert_eq!((local.high_watermark(), local.log_end_offset()), (0, 4));
    // Node 2 leaves the ISR (as its leader would ask after the lag time):
    // everything written is committed now.
    c.controller
        .apply(vec![MetadataRecord::PartitionChange {
            topic_id,
            partition: 1,
            leader: 1,
            isr: vec![1],
            replicas: None,
            elr: None,
        }])
        .unwrap();
    assert_eq!(local.high_watermark(), 4);

    let fetch = |v: i16| {
        let mut t = fetch_request::FetchTopic::default().with_partitions(
            (0..2)
                .map(|i| fetch_request::FetchPartition::default().with_partition(i).with_partition_max_bytes(1 << 20))
                .collect(),
        );
        if v >= 13 {
            t.topic_id = topic_id;
        } else {
            t.topic = name("split");
        }
        RequestKind::Fetch(FetchRequest::default().with_max_wait_ms(0).with_max_bytes(1 << 20).with_topics(vec![t]))
    };
    for v in [12, 16] {
        let ResponseKind::Fetch(r) = c.client.call(ApiKey::Fetch, v, fetch(v)).await else { unreachable!() };
        let parts = &r.responses[0].partitions;
        assert_eq!(parts.iter().map(|p| p.error_code).collect::<Vec<_>>(), vec![NOT_LEADER, 0], "v{v}");
        assert!(parts[1].records.as_ref().is_some_and(|b| !b.is_empty()), "v{v}: the local partition is served");
        if v >= 16 {
            assert_eq!((parts[0].current_leader.leader_id.0, parts[0].current_leader.leader_epoch), (2, 0));
            assert_eq!(r.node_endpoints.iter().map(|e| (e.node_id.0, e.port)).collect::<Vec<_>>(), vec![(2, 19092)]);
        } else {
            assert!(r.node_endpoints.is_empty());
        }
    }

    let list = ListOffsetsRequest::default().with_topics(vec![
        list_offsets_request::ListOffsetsTopic::default().with_name(name("split")).with_partitions(
            (0..2)
                .map(|i| {
                    list_offsets_request::ListOffsetsPartition::default().with_partition_index(i).with_timestamp(-1)
                })
                .collect(),
        ),
    ]);
    let ResponseKind::ListOffsets(r) = c.client.call(ApiKey::ListOffsets, 7, RequestKind::ListOffsets(list)).await
    else {
        unreachable!()
    };
    let p = &r.topics[0].partitions;
    assert_eq!((p[0].error_code, p[1].error_code, p[1].offset), (NOT_LEADER, 0, 4), "one record per produce above");
    assert!(c.broker.topic("split").unwrap().partition(0).is_none(), "no local log for node 2's partition");
}

#[tokio::test]
async fn coordinators_follow_the_internal_topics_leaders() {
    let mut c = start().await;
    let remote = group_on(|p| p == 0);
    let local = group_on(|p| p != 0);
    lead_on_2(&c.controller, GROUP_TOPIC, 0);
    let find = |keys: &[&str], key_type: i8| {
        RequestKind::FindCoordinator(
            FindCoordinatorRequest::default()
                .with_key_type(key_type)
                .with_coordinator_keys(keys.iter().map(|k| StrBytes::from_string(k.to_string())).collect()),
        )
    };
    let ResponseKind::FindCoordinator(r) = c.client.call(ApiKey::FindCoordinator, 4, find(&[&remote, &local], 0)).await
    else {
        unreachable!()
    };
    let found: Vec<(i32, String, i32, i16)> =
        r.coordinators.iter().map(|x| (x.node_id.0, x.host.to_string(), x.port, x.error_code)).collect();
    assert_eq!(found, vec![(2, "node2.example".into(), 19092, 0), (1, "127.0.0.1".into(), c.port, 0)]);
    // Transactional ids: __transaction_state is all on this node.
    let ResponseKind::FindCoordinator(r) = c.client.call(ApiKey::FindCoordinator, 4, find(&["tx"], 1)).await else {
        unreachable!()
    };
    assert_eq!(r.coordinators[0].node_id.0, 1);

    // Group APIs for the remote group: NOT_COORDINATOR.
    let join = JoinGroupRequest::default()
        .with_group_id(GroupId(StrBytes::from_string(remote.clone())))
        .with_session_timeout_ms(10_000)
        .with_rebalance_timeout_ms(10_000)
        .with_protocol_type(StrBytes::from_static_str("consumer"));
    let ResponseKind::JoinGroup(r) = c.client.call(ApiKey::JoinGroup, 5, RequestKind::JoinGroup(join)).await else {
        unreachable!()
    };
    assert_eq!(r.error_code, NOT_COORDINATOR);
    let commit = |group: &str| {
        RequestKind::OffsetCommit(
            OffsetCommitRequest::default()
                .with_group_id(GroupId(StrBytes::from_string(group.to_string())))
                .with_generation_id_or_member_epoch(-1)
                .with_topics(vec![
                    offset_commit_request::OffsetCommitRequestTopic::default()
                        .with_name(name("split"))
                        .with_partitions(vec![
                            offset_commit_request::OffsetCommitRequestPartition::default()
                                .with_partition_index(0)
                                .with_committed_offset(1),
                        ]),
                ]),
        )
    };
    let ResponseKind::OffsetCommit(r) = c.client.call(ApiKey::OffsetCommit, 8, commit(&remote)).await else {
        unreachable!()
    };
    assert_eq!(r.topics[0].partitions[0].error_code, NOT_COORDINATOR);
    // The local group commits, also for a partition led elsewhere.
    let ResponseKind::OffsetCommit(r) = c.client.call(ApiKey::OffsetCommit, 8, commit(&local)).await else {
        unreachable!()
    };
    assert_eq!(r.topics[0].partitions[0].error_code, 0);
    let describe = DescribeGroupsRequest::default().with_groups(vec![
        GroupId(StrBytes::from_string(remote.clone())),
        GroupId(StrBytes::from_string(local.clone())),
    ]);
    let ResponseKind::DescribeGroups(r) =
        c.client.call(ApiKey::DescribeGroups, 5, RequestKind::DescribeGroups(describe)).await
    else {
        unreachable!()
    };
    assert_eq!(r.groups.iter().map(|g| g.error_code).collect::<Vec<_>>(), vec![NOT_COORDINATOR, 0]);

    // Transactional ids coordinated elsewhere.
    lead_on_2(&c.controller, TXN_TOPIC, coordinator_partition("tx", INTERNAL_PARTITIONS).unwrap());
    let init = InitProducerIdRequest::default()
        .with_transactional_id(Some(TransactionalId(StrBytes::from_static_str("tx"))))
        .with_transaction_timeout_ms(60_000)
        .with_producer_id(ProducerId(-1))
        .with_producer_epoch(-1);
    let ResponseKind::InitProducerId(r) =
        c.client.call(ApiKey::InitProducerId, 4, RequestKind::InitProducerId(init)).await
    else {
        unreachable!()
    };
    assert_eq!(r.error_code, NOT_COORDINATOR);
    let end = EndTxnRequest::default().with_transactional_id(TransactionalId(StrBytes::from_static_str("tx")));
    let ResponseKind::EndTxn(r) = c.client.call(ApiKey::EndTxn, 3, RequestKind::EndTxn(end)).await else {
        unreachable!()
    };
    assert_eq!(r.error_code, NOT_COORDINATOR);

    // A fenced coordinator is none: COORDINATOR_NOT_AVAILABLE.
    c.controller.apply(vec![MetadataRecord::FenceNode { node_id: 2 }]).unwrap();
    let ResponseKind::FindCoordinator(r) = c
        .client
        .call(ApiKey::FindCoordinator, 3, {
            RequestKind::FindCoordinator(
                FindCoordinatorRequest::default().with_key(StrBytes::from_string(remote.clone())),
            )
        })
        .await
    else {
        unreachable!()
    };
    assert_eq!((r.error_code, r.node_id.0), (COORDINATOR_NOT_AVAILABLE, -1));

    // A leaderless partition (its leader died, none elected yet) is no
    // coordinator either; the node that led it stops serving its groups.
    let id = c.controller.image().topic(GROUP_TOPIC).unwrap().id;
    let index = coordinator_partition(&local, INTERNAL_PARTITIONS).unwrap();
    c.controller
        .apply(vec![MetadataRecord::PartitionChange {
            topic_id: id,
            partition: index,
            leader: -1,
            isr: vec![],
            replicas: None,
            elr: None,
        }])
        .unwrap();
    let ResponseKind::FindCoordinator(r) = c.client.call(ApiKey::FindCoordinator, 4, find(&[&local], 0)).await else {
        unreachable!()
    };
    assert_eq!((r.coordinators[0].error_code, r.coordinators[0].node_id.0), (COORDINATOR_NOT_AVAILABLE, -1));
    let ResponseKind::OffsetCommit(r) = c.client.call(ApiKey::OffsetCommit, 8, commit(&local)).await else {
        unreachable!()
    };
    assert_eq!(r.topics[0].partitions[0].error_code, NOT_COORDINATOR);
}

#[tokio::test]
async fn admin_requests_go_through_the_controller() {
    let mut c = start().await;
    let create = |name: &str, rf: i16| {
        create_topics_request::CreatableTopic::default()
            .with_name(TopicName(StrBytes::from_string(name.to_string())))
            .with_num_partitions(2)
            .with_replication_factor(rf)
    };
    let req = CreateTopicsRequest::default()
        .with_topics(vec![create("fresh", 1), create("too-many", 3)])
        .with_timeout_ms(5000);
    let ResponseKind::CreateTopics(r) = c.client.call(ApiKey::CreateTopics, 7, RequestKind::CreateTopics(req)).await
    else {
        unreachable!()
    };
    assert_eq!(r.topics.iter().map(|t| t.error_code).collect::<Vec<_>>(), vec![0, INVALID_REPLICATION_FACTOR]);
    let image = c.controller.image();
    assert_eq!(r.topics[0].topic_id, image.topic("fresh").unwrap().id, "the controller's id is answered");
    assert!(image.topic("too-many").is_none());
    assert_eq!(c.broker.topic("fresh").unwrap().partitions().len(), 2, "applied here before the answer");

    // Auto-creation through Metadata lands in the image and answers leaders.
    let req = MetadataRequest::default()
        .with_topics(Some(vec![metadata_request::MetadataRequestTopic::default().with_name(Some(name("auto")))]))
        .with_allow_auto_topic_creation(true);
    let ResponseKind::Metadata(m) = c.client.call(ApiKey::Metadata, 12, RequestKind::Metadata(req)).await else {
        unreachable!()
    };
    assert_eq!((m.topics[0].error_code, m.topics[0].partitions[0].leader_id.0), (0, 1));
    assert!(c.controller.image().topic("auto").is_some());

    // A broker without a controller refuses admin changes.
    let dir = tempfile::tempdir().unwrap();
    let lone = Broker::open(BrokerConfig { data_dir: dir.path().to_path_buf(), ..BrokerConfig::default() }).unwrap();
    assert!(matches!(
        lone.create_topic("x", Some(1), &BTreeMap::new(), false).await,
        Err(ferry_broker::BrokerError::ControllerUnavailable(_))
    ));
}
