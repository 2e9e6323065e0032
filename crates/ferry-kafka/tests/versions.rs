//! Every supported API at every version it advertises: the request encoded
//! by the codec's client half, the response decoded by it. Catches fields a
//! version cannot carry, header-version mistakes and wrong framing.

use std::collections::BTreeMap;
use std::sync::Arc;

use bytes::{Buf, Bytes, BytesMut};
use ferry_broker::BrokerConfig;
use ferry_records::compression::Compression;
use ferry_records::records::{NewRecord, build_batch};
use kafka_protocol::messages::*;
use kafka_protocol::protocol::{Decodable, Encodable, StrBytes};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

fn name(s: &str) -> TopicName {
    TopicName(StrBytes::from_string(s.to_string()))
}

fn request(key: ApiKey, v: i16, topic_id: uuid::Uuid, batch: &Bytes) -> RequestKind {
    match key {
        ApiKey::ApiVersions => RequestKind::ApiVersions(
            ApiVersionsRequest::default()
                .with_client_software_name(StrBytes::from_static_str("t"))
                .with_client_software_version(StrBytes::from_static_str("1")),
        ),
        ApiKey::Metadata => RequestKind::Metadata(
            MetadataRequest::default()
                .with_topics(Some(vec![metadata_request::MetadataRequestTopic::default().with_name(Some(name("t")))]))
                .with_allow_auto_topic_creation(true),
        ),
        ApiKey::Produce => {
            let mut t = produce_request::TopicProduceData::default().with_partition_data(vec![
                produce_request::PartitionProduceData::default().with_index(0).with_records(Some(batch.clone())),
            ]);
            if v >= 13 {
                t.topic_id = topic_id;
            } else {
                t.name = name("t");
            }
            RequestKind::Produce(ProduceRequest::default().with_acks(-1).with_timeout_ms(5000).with_topic_data(vec![t]))
        }
        ApiKey::Fetch => {
            let mut t = fetch_request::FetchTopic::default().with_partitions(vec![
                fetch_request::FetchPartition::default()
                    .with_partition(0)
                    .with_fetch_offset(0)
                    .with_partition_max_bytes(1 << 20),
            ]);
            if v >= 13 {
                t.topic_id = topic_id;
            } else {
                t.topic = name("t");
            }
            let mut r = FetchRequest::default().with_max_wait_ms(0).with_min_bytes(1).with_topics(vec![t]);
            if v >= 3 {
                r.max_bytes = 1 << 20;
            }
            if v >= 7 {
                r.session_epoch = -1;
            }
            RequestKind::Fetch(r)
        }
        ApiKey::ListOffsets => RequestKind::ListOffsets(ListOffsetsRequest::default().with_topics(vec![
            list_offsets_request::ListOffsetsTopic::default().with_name(name("t")).with_partitions(vec![
                list_offsets_request::ListOffsetsPartition::default().with_partition_index(0).with_timestamp(-1),
            ]),
        ])),
        ApiKey::CreateTopics => RequestKind::CreateTopics(CreateTopicsRequest::default().with_topics(vec![
            create_topics_request::CreatableTopic::default()
                .with_name(name(&format!("c{v}")))
                .with_num_partitions(1)
                .with_replication_factor(1),
        ])),
        ApiKey::DeleteTopics => {
            let mut r = DeleteTopicsRequest::default();
            if v >= 6 {
                r.topics = vec![delete_topics_request::DeleteTopicState::default().with_name(Some(name("gone")))];
            } else {
                r.topic_names = vec![name("gone")];
            }
            RequestKind::DeleteTopics(r)
        }
        ApiKey::DeleteRecords => RequestKind::DeleteRecords(DeleteRecordsRequest::default().with_topics(vec![
            delete_records_request::DeleteRecordsTopic::default().with_name(name("t")).with_partitions(vec![
                delete_records_request::DeleteRecordsPartition::default().with_partition_index(0).with_offset(0),
            ]),
        ])),
        ApiKey::DescribeConfigs => RequestKind::DescribeConfigs(
            DescribeConfigsRequest::default()
                .with_include_synonyms(true)
                .with_include_documentation(v >= 3)
                .with_resources(vec![
                    describe_configs_request::DescribeConfigsResource::default()
                        .with_resource_type(2)
                        .with_resource_name(StrBytes::from_static_str("t")),
                    describe_configs_request::DescribeConfigsResource::default()
                        .with_resource_type(4)
                        .with_resource_name(StrBytes::from_static_str("1")),
                ]),
        ),
        ApiKey::AlterConfigs => RequestKind::AlterConfigs(AlterConfigsRequest::default().with_resources(vec![
            alter_configs_request::AlterConfigsResource::default()
                .with_resource_type(2)
                .with_resource_name(StrBytes::from_static_str("t"))
                .with_configs(vec![
                    alter_configs_request::AlterableConfig::default()
                        .with_name(StrBytes::from_static_str("retention.ms"))
                        .with_value(Some(StrBytes::from_static_str("100000"))),
                ]),
        ])),
        ApiKey::IncrementalAlterConfigs => {
            RequestKind::IncrementalAlterConfigs(IncrementalAlterConfigsRequest::default().with_resources(vec![
                incremental_alter_configs_request::AlterConfigsResource::default()
                    .with_resource_type(2)
                    .with_resource_name(StrBytes::from_static_str("t"))
                    .with_configs(vec![
                        incremental_alter_configs_request::AlterableConfig::default()
                            .with_name(StrBytes::from_static_str("cleanup.policy"))
                            .with_config_operation(2)
                            .with_value(Some(StrBytes::from_static_str("compact"))),
                    ]),
            ]))
        }
        ApiKey::DescribeLogDirs => RequestKind::DescribeLogDirs(DescribeLogDirsRequest::default().with_topics(None)),
        ApiKey::CreatePartitions => {
            RequestKind::CreatePartitions(CreatePartitionsRequest::default().with_topics(vec![
                create_partitions_request::CreatePartitionsTopic::default()
                    .with_name(name("grow"))
                    .with_count(i32::from(v) + 2),
            ]))
        }
        ApiKey::DescribeCluster => RequestKind::DescribeCluster(DescribeClusterRequest::default()),
        ApiKey::DescribeQuorum => RequestKind::DescribeQuorum(DescribeQuorumRequest::default().with_topics(vec![
            describe_quorum_request::TopicData::default()
                .with_topic_name(name("__cluster_metadata"))
                .with_partitions(vec![describe_quorum_request::PartitionData::default()]),
        ])),
        ApiKey::DescribeTopicPartitions => RequestKind::DescribeTopicPartitions(
            DescribeTopicPartitionsRequest::default().with_response_partition_limit(100).with_topics(vec![
                describe_topic_partitions_request::TopicRequest::default().with_name(name("t")),
                describe_topic_partitions_request::TopicRequest::default().with_name(name("nope")),
            ]),
        ),
        ApiKey::ElectLeaders => RequestKind::ElectLeaders(
            ElectLeadersRequest::default().with_election_type(i8::from(v >= 1)).with_topic_partitions(Some(vec![
                elect_leaders_request::TopicPartitions::default().with_topic(name("t")).with_partitions(vec![0, 7]),
            ])),
        ),
        ApiKey::InitProducerId => RequestKind::InitProducerId(
            InitProducerIdRequest::default()
                .with_transactional_id(None)
                .with_producer_id(ProducerId(-1))
                .with_producer_epoch(-1),
        ),
        ApiKey::FindCoordinator => {
            let mut r = FindCoordinatorRequest::default();
            if v >= 4 {
                r.coordinator_keys = vec![StrBytes::from_static_str("g")];
            } else {
                r.key = StrBytes::from_static_str("g");
            }
            RequestKind::FindCoordinator(r)
        }
        ApiKey::JoinGroup => RequestKind::JoinGroup(
            JoinGroupRequest::default()
                .with_group_id(GroupId(StrBytes::from_string(format!("g{v}"))))
                .with_session_timeout_ms(10_000)
                .with_rebalance_timeout_ms(if v >= 1 { 10_000 } else { -1 })
                .with_group_instance_id(None)
                .with_protocol_type(StrBytes::from_static_str("consumer"))
                .with_protocols(vec![
                    join_group_request::JoinGroupRequestProtocol::default()
                        .with_name(StrBytes::from_static_str("range"))
                        .with_metadata(Bytes::from_static(b"meta")),
                ]),
        ),
        ApiKey::SyncGroup => RequestKind::SyncGroup(
            SyncGroupRequest::default()
                .with_group_id(GroupId(StrBytes::from_static_str("nobody")))
                .with_generation_id(1)
                .with_member_id(StrBytes::from_static_str("m"))
                .with_group_instance_id(None)
                .with_protocol_type(None)
                .with_protocol_name(None),
        ),
        ApiKey::Heartbeat => RequestKind::Heartbeat(
            HeartbeatRequest::default()
                .with_group_id(GroupId(StrBytes::from_static_str("nobody")))
                .with_member_id(StrBytes::from_static_str("m"))
                .with_group_instance_id(None),
        ),
        ApiKey::LeaveGroup => {
            let mut r = LeaveGroupRequest::default().with_group_id(GroupId(StrBytes::from_static_str("nobody")));
            if v >= 3 {
                r.members = vec![
                    leave_group_request::MemberIdentity::default()
                        .with_member_id(StrBytes::from_static_str("m"))
                        .with_group_instance_id(None)
                        .with_reason(None),
                ];
            } else {
                r.member_id = StrBytes::from_static_str("m");
            }
            RequestKind::LeaveGroup(r)
        }
        ApiKey::ListGroups => RequestKind::ListGroups(ListGroupsRequest::default()),
        ApiKey::DescribeGroups => RequestKind::DescribeGroups(
            DescribeGroupsRequest::default().with_groups(vec![GroupId(StrBytes::from_static_str("simple"))]),
        ),
        ApiKey::DeleteGroups => RequestKind::DeleteGroups(
            DeleteGroupsRequest::default().with_groups_names(vec![GroupId(StrBytes::from_static_str("never"))]),
        ),
        ApiKey::OffsetCommit => RequestKind::OffsetCommit(
            OffsetCommitRequest::default()
                .with_group_id(GroupId(StrBytes::from_static_str("simple")))
                .with_generation_id_or_member_epoch(-1)
                .with_group_instance_id(None)
                .with_topics(vec![
                    offset_commit_request::OffsetCommitRequestTopic::default().with_name(name("t")).with_partitions(
                        vec![
                            offset_commit_request::OffsetCommitRequestPartition::default()
                                .with_partition_index(0)
                                .with_committed_offset(1)
                                .with_committed_metadata(Some(StrBytes::from_static_str("md"))),
                        ],
                    ),
                ]),
        ),
        ApiKey::OffsetFetch => {
            let mut r = OffsetFetchRequest::default();
            if v >= 8 {
                r.groups = vec![
                    offset_fetch_request::OffsetFetchRequestGroup::default()
                        .with_group_id(GroupId(StrBytes::from_static_str("simple")))
                        .with_member_id(None)
                        .with_topics(Some(vec![
                            offset_fetch_request::OffsetFetchRequestTopics::default()
                                .with_name(name("t"))
                                .with_partition_indexes(vec![0]),
                        ])),
                ];
            } else {
                r.group_id = GroupId(StrBytes::from_static_str("simple"));
                r.topics = Some(vec![
                    offset_fetch_request::OffsetFetchRequestTopic::default()
                        .with_name(name("t"))
                        .with_partition_indexes(vec![0]),
                ]);
            }
            RequestKind::OffsetFetch(r)
        }
        ApiKey::OffsetDelete => RequestKind::OffsetDelete(
            OffsetDeleteRequest::default().with_group_id(GroupId(StrBytes::from_static_str("simple"))).with_topics(
                vec![offset_delete_request::OffsetDeleteRequestTopic::default().with_name(name("t")).with_partitions(
                    vec![offset_delete_request::OffsetDeleteRequestPartition::default().with_partition_index(0)],
                )],
            ),
        ),
        ApiKey::ConsumerGroupHeartbeat => RequestKind::ConsumerGroupHeartbeat(
            ConsumerGroupHeartbeatRequest::default()
                .with_group_id(GroupId(StrBytes::from_string(format!("cg{v}"))))
                .with_member_id(StrBytes::from_string(format!("member-{v}")))
                .with_member_epoch(0)
                .with_instance_id(None)
                .with_rack_id(None)
                .with_rebalance_timeout_ms(10_000)
                .with_subscribed_topic_names(Some(vec![name("t")]))
                .with_subscribed_topic_regex(None)
                .with_server_assignor(None)
                .with_topic_partitions(Some(vec![])),
        ),
        ApiKey::ConsumerGroupDescribe => RequestKind::ConsumerGroupDescribe(
            ConsumerGroupDescribeRequest::default().with_group_ids(vec![GroupId(StrBytes::from_static_str("cg0"))]),
        ),
        ApiKey::AddPartitionsToTxn => {
            let topics = vec![
                add_partitions_to_txn_request::AddPartitionsToTxnTopic::default()
                    .with_name(name("t"))
                    .with_partitions(vec![0]),
            ];
            let txn = TransactionalId(StrBytes::from_static_str("tx"));
            let r = if v <= 3 {
                AddPartitionsToTxnRequest::default()
                    .with_v3_and_below_transactional_id(txn)
                    .with_v3_and_below_producer_id(ProducerId(0))
                    .with_v3_and_below_topics(topics)
            } else {
                AddPartitionsToTxnRequest::default().with_transactions(vec![
                    add_partitions_to_txn_request::AddPartitionsToTxnTransaction::default()
                        .with_transactional_id(txn)
                        .with_verify_only(true)
                        .with_topics(topics),
                ])
            };
            RequestKind::AddPartitionsToTxn(r)
        }
        ApiKey::AddOffsetsToTxn => RequestKind::AddOffsetsToTxn(
            AddOffsetsToTxnRequest::default()
                .with_transactional_id(TransactionalId(StrBytes::from_static_str("tx")))
                .with_group_id(GroupId(StrBytes::from_static_str("g"))),
        ),
        ApiKey::EndTxn => RequestKind::EndTxn(
            EndTxnRequest::default().with_transactional_id(TransactionalId(StrBytes::from_static_str("tx"))),
        ),
        ApiKey::TxnOffsetCommit => RequestKind::TxnOffsetCommit(
            TxnOffsetCommitRequest::default()
                .with_transactional_id(TransactionalId(StrBytes::from_static_str("tx")))
                .with_group_id(GroupId(StrBytes::from_static_str("g")))
                .with_generation_id(-1)
                .with_topics(vec![
                    txn_offset_commit_request::TxnOffsetCommitRequestTopic::default()
                        .with_name(name("t"))
                        .with_partitions(vec![
                            txn_offset_commit_request::TxnOffsetCommitRequestPartition::default()
                                .with_committed_offset(1),
                        ]),
                ]),
        ),
        ApiKey::DescribeTransactions => RequestKind::DescribeTransactions(
            DescribeTransactionsRequest::default()
                .with_transactional_ids(vec![TransactionalId(StrBytes::from_static_str("tx"))]),
        ),
        ApiKey::ListTransactions => RequestKind::ListTransactions(ListTransactionsRequest::default()),
        ApiKey::AlterPartitionReassignments => RequestKind::AlterPartitionReassignments(
            // A cancel where nothing moves: NO_REASSIGNMENT_IN_PROGRESS.
            AlterPartitionReassignmentsRequest::default().with_timeout_ms(5000).with_topics(vec![
                alter_partition_reassignments_request::ReassignableTopic::default()
                    .with_name(name("t"))
                    .with_partitions(vec![
                        alter_partition_reassignments_request::ReassignablePartition::default().with_replicas(None),
                    ]),
            ]),
        ),
        ApiKey::ListPartitionReassignments => RequestKind::ListPartitionReassignments(
            ListPartitionReassignmentsRequest::default().with_timeout_ms(5000).with_topics(None),
        ),
        ApiKey::UnregisterBroker => {
            RequestKind::UnregisterBroker(UnregisterBrokerRequest::default().with_broker_id(BrokerId(99)))
        }
        // This listener has no SASL and no authorizer: the SASL APIs answer
        // ILLEGAL_SASL_STATE, the ACL APIs SECURITY_DISABLED, users work.
        ApiKey::SaslHandshake => RequestKind::SaslHandshake(
            SaslHandshakeRequest::default().with_mechanism(StrBytes::from_static_str("PLAIN")),
        ),
        ApiKey::SaslAuthenticate => RequestKind::SaslAuthenticate(SaslAuthenticateRequest::default()),
        ApiKey::CreateAcls => RequestKind::CreateAcls(CreateAclsRequest::default().with_creations(vec![
            create_acls_request::AclCreation::default()
                .with_resource_type(2)
                .with_resource_name(StrBytes::from_static_str("t"))
                .with_resource_pattern_type(3)
                .with_principal(StrBytes::from_static_str("User:a"))
                .with_host(StrBytes::from_static_str("*"))
                .with_operation(3)
                .with_permission_type(3),
        ])),
        ApiKey::DescribeAcls => RequestKind::DescribeAcls(
            DescribeAclsRequest::default()
                .with_resource_type_filter(1)
                .with_pattern_type_filter(1)
                .with_principal_filter(None)
                .with_host_filter(None)
                .with_operation(1)
                .with_permission_type(1),
        ),
        ApiKey::DeleteAcls => RequestKind::DeleteAcls(DeleteAclsRequest::default().with_filters(vec![
            delete_acls_request::DeleteAclsFilter::default()
                .with_resource_type_filter(1)
                .with_pattern_type_filter(1)
                .with_operation(1)
                .with_permission_type(1),
        ])),
        ApiKey::DescribeUserScramCredentials => {
            RequestKind::DescribeUserScramCredentials(DescribeUserScramCredentialsRequest::default())
        }
        ApiKey::AlterUserScramCredentials => {
            RequestKind::AlterUserScramCredentials(AlterUserScramCredentialsRequest::default().with_upsertions(vec![
                alter_user_scram_credentials_request::ScramCredentialUpsertion::default()
                    .with_name(StrBytes::from_static_str("u"))
                    .with_mechanism(1)
                    .with_iterations(4096)
                    .with_salt(Bytes::from_static(b"salt"))
                    .with_salted_password(Bytes::from(vec![7u8; 32])),
            ]))
        }
        other => panic!("no sample request for {other:?}"),
    }
}

#[tokio::test]
async fn every_api_at_every_version_round_trips() {
    let dir = tempfile::tempdir().unwrap();
    let mut config = BrokerConfig { data_dir: dir.path().to_path_buf(), ..BrokerConfig::default() };
    config.groups.initial_rebalance_delay = std::time::Duration::ZERO;
    let broker = ferry_broker::testing::open(config).unwrap();
    let topic = broker.create_topic("t", Some(1), &BTreeMap::new(), false).await.unwrap();
    broker.create_topic("grow", Some(1), &BTreeMap::new(), false).await.unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let config = ferry_kafka::KafkaConfig { advertised_port: i32::from(port), ..Default::default() };
    let ctx = Arc::new(ferry_kafka::Ctx { broker: broker.clone(), config });
    let (_stop, rx) = tokio::sync::watch::channel(false);
    tokio::spawn(ferry_kafka::serve(listener, ctx, rx));
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_millis() as i64;
    let rec = NewRecord { key: Some(b"k"), value: Some(b"v"), headers: vec![], timestamp: now };
    let batch = Bytes::from(build_batch(&[rec], Compression::None, -1, -1, -1).unwrap());

    let mut s = TcpStream::connect(("127.0.0.1", port)).await.unwrap();
    let mut correlation = 0;
    let mut checked = 0;
    // Exactly what ApiVersions advertises.
    let advertised = {
        let header = RequestHeader::default()
            .with_request_api_key(ApiKey::ApiVersions as i16)
            .with_request_api_version(3)
            .with_client_id(Some(StrBytes::from_static_str("versions-test")));
        let mut buf = BytesMut::new();
        header.encode(&mut buf, ApiKey::ApiVersions.request_header_version(3)).unwrap();
        request(ApiKey::ApiVersions, 3, topic.id, &batch).encode(&mut buf, 3).unwrap();
        s.write_all(&(buf.len() as i32).to_be_bytes()).await.unwrap();
        s.write_all(&buf).await.unwrap();
        let len = s.read_i32().await.unwrap();
        let mut body = BytesMut::zeroed(len as usize);
        s.read_exact(&mut body).await.unwrap();
        let mut body = body.freeze();
        ResponseHeader::decode(&mut body, 0).unwrap();
        let ResponseKind::ApiVersions(r) = ResponseKind::decode(ApiKey::ApiVersions, &mut body, 3).unwrap() else {
            unreachable!()
        };
        r.api_keys
    };
    let keys: Vec<(ApiKey, i16, i16)> =
        advertised.iter().map(|a| (ApiKey::try_from(a.api_key).unwrap(), a.min_version, a.max_version)).collect();
    for &(key, min, max) in &keys {
        let codec = key.valid_versions();
        assert!(min >= codec.min && max <= codec.max, "{key:?} advertised beyond the codec");
    }
    for &(key, min, max) in &keys {
        for v in min..=max {
            correlation += 1;
            if key == ApiKey::DeleteTopics {
                broker.create_topic("gone", Some(1), &BTreeMap::new(), false).await.unwrap();
            }
            let header = RequestHeader::default()
                .with_request_api_key(key as i16)
                .with_request_api_version(v)
                .with_correlation_id(correlation)
                .with_client_id(Some(StrBytes::from_static_str("versions-test")));
            let mut buf = BytesMut::new();
            header.encode(&mut buf, key.request_header_version(v)).unwrap();
            request(key, v, topic.id, &batch).encode(&mut buf, v).unwrap();
            // `FERRY_FUZZ_CORPUS=DIR` saves every request as a fuzzing seed.
            if let Ok(dir) = std::env::var("FERRY_FUZZ_CORPUS") {
                std::fs::write(std::path::Path::new(&dir).join(format!("{key:?}-v{v}")), &buf).unwrap();
            }
            s.write_all(&(buf.len() as i32).to_be_bytes()).await.unwrap();
            s.write_all(&buf).await.unwrap();
            let len = s.read_i32().await.unwrap_or_else(|e| panic!("{key:?} v{v}: connection closed: {e}"));
            let mut body = BytesMut::zeroed(len as usize);
            s.read_exact(&mut body).await.unwrap();
            let mut body = body.freeze();
            let resp_header = ResponseHeader::decode(&mut body, key.response_header_version(v)).unwrap();
            assert_eq!(resp_header.correlation_id, correlation, "{key:?} v{v}");
            let resp = ResponseKind::decode(key, &mut body, v).unwrap_or_else(|e| panic!("{key:?} v{v}: {e}"));
            assert_eq!(body.remaining(), 0, "{key:?} v{v}: trailing bytes");
            check(&resp, key, v);
            checked += 1;
        }
    }
    let expected: i32 = keys.iter().map(|(_, min, max)| i32::from(max - min) + 1).sum();
    assert_eq!(checked, expected);
}

/// The interesting outcome of each response, beyond decoding at all.
fn check(resp: &ResponseKind, key: ApiKey, v: i16) {
    match resp {
        ResponseKind::ApiVersions(r) => assert!(r.error_code == 0 && r.api_keys.len() >= 15, "{key:?} v{v}"),
        ResponseKind::Metadata(r) => assert_eq!(r.topics[0].partitions.len(), 1, "{key:?} v{v}"),
        ResponseKind::Produce(r) => assert_eq!(r.responses[0].partition_responses[0].error_code, 0, "{key:?} v{v}"),
        ResponseKind::Fetch(r) => {
            let p = &r.responses[0].partitions[0];
            assert_eq!(p.error_code, 0, "{key:?} v{v}");
            assert!(p.records.as_ref().is_some_and(|b| !b.is_empty()), "{key:?} v{v}: no records");
        }
        ResponseKind::ListOffsets(r) => assert_eq!(r.topics[0].partitions[0].error_code, 0, "{key:?} v{v}"),
        ResponseKind::CreateTopics(r) => assert_eq!(r.topics[0].error_code, 0, "{key:?} v{v}"),
        ResponseKind::DeleteTopics(r) => assert_eq!(r.responses[0].error_code, 0, "{key:?} v{v}"),
        ResponseKind::DeleteRecords(r) => assert_eq!(r.topics[0].partitions[0].error_code, 0, "{key:?} v{v}"),
        ResponseKind::DescribeConfigs(r) => {
            assert!(r.results.iter().all(|x| x.error_code == 0 && !x.configs.is_empty()), "{key:?} v{v}: {r:?}");
        }
        ResponseKind::AlterConfigs(r) => assert_eq!(r.responses[0].error_code, 0, "{key:?} v{v}"),
        ResponseKind::IncrementalAlterConfigs(r) => assert_eq!(r.responses[0].error_code, 0, "{key:?} v{v}"),
        ResponseKind::DescribeLogDirs(r) => assert!(!r.results[0].topics.is_empty(), "{key:?} v{v}"),
        ResponseKind::CreatePartitions(r) => assert_eq!(r.results[0].error_code, 0, "{key:?} v{v}"),
        ResponseKind::DescribeCluster(r) => assert_eq!(r.brokers.len(), 1, "{key:?} v{v}"),
        // The test controller is a quorum of one led by node 1.
        ResponseKind::DescribeQuorum(r) => {
            let p = &r.topics[0].partitions[0];
            assert_eq!((r.error_code, p.error_code, p.leader_id.0), (0, 0, 1), "{key:?} v{v}");
        }
        ResponseKind::DescribeTopicPartitions(r) => {
            let found: Vec<(String, i16, usize)> = r
                .topics
                .iter()
                .map(|t| (t.name.as_ref().map(|n| n.to_string()).unwrap_or_default(), t.error_code, t.partitions.len()))
                .collect();
            assert_eq!(found, vec![("nope".into(), 3, 0), ("t".into(), 0, 1)], "{key:?} v{v}");
            let p = &r.topics[1].partitions[0];
            assert_eq!((p.leader_id.0, p.eligible_leader_replicas.as_ref().map(Vec::len)), (1, Some(0)));
            assert!(r.next_cursor.is_none());
        }
        // t-0 is led by its only replica (ELECTION_NOT_NEEDED, 84); t-7 does not exist (3).
        ResponseKind::ElectLeaders(r) => {
            let codes: Vec<(i32, i16)> =
                r.replica_election_results[0].partition_result.iter().map(|p| (p.partition_id, p.error_code)).collect();
            assert_eq!((r.error_code, codes), (0, vec![(0, 84), (7, 3)]), "{key:?} v{v}");
        }
        ResponseKind::InitProducerId(r) => assert!(r.error_code == 0 && r.producer_id.0 >= 0, "{key:?} v{v}"),
        ResponseKind::FindCoordinator(r) => {
            let ok =
                if v >= 4 { r.coordinators.len() == 1 && r.coordinators[0].error_code == 0 } else { r.error_code == 0 };
            assert!(ok, "{key:?} v{v}");
        }
        // A lone member: v4+ first hands out a member id (MEMBER_ID_REQUIRED, 79).
        ResponseKind::JoinGroup(r) => assert!(
            (v >= 4 && r.error_code == 79 && !r.member_id.is_empty()) || (r.error_code == 0 && r.generation_id == 1),
            "{key:?} v{v}: {r:?}"
        ),
        ResponseKind::SyncGroup(r) => assert_eq!(r.error_code, 25, "{key:?} v{v}"),
        ResponseKind::Heartbeat(r) => assert_eq!(r.error_code, 25, "{key:?} v{v}"),
        ResponseKind::LeaveGroup(r) => {
            let code = if v >= 3 { r.members[0].error_code } else { r.error_code };
            assert_eq!(code, 25, "{key:?} v{v}");
        }
        ResponseKind::ListGroups(r) => assert_eq!(r.error_code, 0, "{key:?} v{v}"),
        ResponseKind::DescribeGroups(r) => assert_eq!(r.groups.len(), 1, "{key:?} v{v}"),
        ResponseKind::DeleteGroups(r) => assert_eq!(r.results[0].error_code, 69, "{key:?} v{v}"),
        ResponseKind::OffsetCommit(r) => assert_eq!(r.topics[0].partitions[0].error_code, 0, "{key:?} v{v}"),
        ResponseKind::OffsetFetch(r) => {
            let offset = if v >= 8 {
                r.groups[0].topics[0].partitions[0].committed_offset
            } else {
                r.topics[0].partitions[0].committed_offset
            };
            assert!(offset == 1 || offset == -1, "{key:?} v{v}");
        }
        ResponseKind::OffsetDelete(r) => assert_eq!(r.error_code, 0, "{key:?} v{v}"),
        ResponseKind::ConsumerGroupHeartbeat(r) => {
            assert_eq!(r.error_code, 0, "{key:?} v{v}");
            let parts =
                r.assignment.as_ref().map_or(0, |a| a.topic_partitions.iter().map(|t| t.partitions.len()).sum());
            assert_eq!((r.member_epoch, parts), (1, 1), "{key:?} v{v}: the lone member gets t's one partition");
        }
        ResponseKind::SaslHandshake(r) => assert_eq!(r.error_code, 34, "{key:?} v{v}"),
        ResponseKind::SaslAuthenticate(r) => assert_eq!(r.error_code, 34, "{key:?} v{v}"),
        ResponseKind::CreateAcls(r) => assert_eq!(r.results[0].error_code, 54, "{key:?} v{v}"),
        ResponseKind::DescribeAcls(r) => assert_eq!(r.error_code, 54, "{key:?} v{v}"),
        ResponseKind::DeleteAcls(r) => assert_eq!(r.filter_results[0].error_code, 54, "{key:?} v{v}"),
        ResponseKind::DescribeUserScramCredentials(r) => assert_eq!(r.error_code, 0, "{key:?} v{v}"),
        ResponseKind::AlterUserScramCredentials(r) => assert_eq!(r.results[0].error_code, 0, "{key:?} v{v}: {r:?}"),
        ResponseKind::ConsumerGroupDescribe(r) => {
            assert_eq!(r.groups[0].error_code, 0, "{key:?} v{v}");
            assert_eq!(r.groups[0].members.len(), 1, "{key:?} v{v}");
        }
        // No transactional id "tx": every transactional call is refused
        // with INVALID_PRODUCER_ID_MAPPING (49), description with
        // TRANSACTIONAL_ID_NOT_FOUND (105).
        ResponseKind::AddPartitionsToTxn(r) => {
            let code = if v <= 3 {
                r.results_by_topic_v3_and_below[0].results_by_partition[0].partition_error_code
            } else {
                r.results_by_transaction[0].topic_results[0].results_by_partition[0].partition_error_code
            };
            assert_eq!(code, 49, "{key:?} v{v}");
        }
        ResponseKind::AddOffsetsToTxn(r) => assert_eq!(r.error_code, 49, "{key:?} v{v}"),
        ResponseKind::EndTxn(r) => assert_eq!(r.error_code, 49, "{key:?} v{v}"),
        ResponseKind::TxnOffsetCommit(r) => assert_eq!(r.topics[0].partitions[0].error_code, 49, "{key:?} v{v}"),
        ResponseKind::DescribeTransactions(r) => assert_eq!(r.transaction_states[0].error_code, 105, "{key:?} v{v}"),
        ResponseKind::ListTransactions(r) => assert_eq!(r.error_code, 0, "{key:?} v{v}"),
        ResponseKind::AlterPartitionReassignments(r) => {
            assert_eq!(r.responses[0].partitions[0].error_code, 85, "{key:?} v{v}");
        }
        ResponseKind::ListPartitionReassignments(r) => {
            assert!(r.error_code == 0 && r.topics.is_empty(), "{key:?} v{v}");
        }
        ResponseKind::UnregisterBroker(r) => assert_eq!(r.error_code, 102, "{key:?} v{v}"),
        _ => panic!("unexpected response"),
    }
}
