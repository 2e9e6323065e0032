//! Tests of the AMQP definitions as metadata.

use std::collections::BTreeMap;

use uuid::Uuid;

use super::*;
use crate::messaging::{Destination, ExchangeKind, HeaderValue, Headers};
use crate::metadata::{MetadataError, MetadataImage, MetadataRecord};

fn exchange(name: &str, auto_delete: bool) -> ExchangeDef {
    ExchangeDef {
        name: name.into(),
        kind: ExchangeKind::Topic,
        durable: true,
        auto_delete,
        internal: false,
        delayed: false,
        arguments: Arguments::default(),
    }
}

fn binding(source: &str, queue: &str, key: &str) -> BindingDef {
    BindingDef {
        source: source.into(),
        destination: Destination::Queue(queue.into()),
        routing_key: key.into(),
        arguments: Arguments::default(),
    }
}

fn declare_queue(name: &str, args: Headers, queue_type: QueueType) -> AmqpRequest {
    AmqpRequest::DeclareQueue {
        vhost: "/".into(),
        name: name.into(),
        auto_delete: false,
        arguments: Arguments(args),
        queue_type,
    }
}

/// Carries `request` out from node 1 and applies its records as one
/// entry, as a controller does; quorum topics get one replica on node 1.
fn commit(image: &mut MetadataImage, request: AmqpRequest) -> Result<Vec<MetadataRecord>, MetadataError> {
    let mut n = 0u128;
    let mut make_topic = |name: &str, _: Option<usize>| {
        n += 1;
        let id = Uuid::from_u128(u128::from(image.applied_index) * 100 + n);
        let create = MetadataRecord::CreateTopic {
            name: name.to_string(),
            id,
            internal: true,
            configs: BTreeMap::new(),
            replicas: vec![vec![1]],
        };
        Ok((id, vec![create]))
    };
    let records = amqp_change(image, 1, &request, &mut make_topic)?;
    let index = image.applied_index + 1;
    image.apply_batch(index, &records)?;
    Ok(records)
}

/// An image holding the vhosts `names`, created through requests.
fn with_vhosts(names: &[&str]) -> MetadataImage {
    let mut image = MetadataImage::default();
    for name in names {
        commit(&mut image, AmqpRequest::CreateVhost { name: name.to_string() }).unwrap();
    }
    image
}

#[test]
fn exchanges_bindings_and_queues_are_metadata() {
    let mut image = with_vhosts(&["/"]);
    let declare_x = |x: ExchangeDef| AmqpRequest::DeclareExchange { vhost: "/".into(), exchange: x };
    assert_eq!(commit(&mut image, declare_x(exchange("logs", true))).unwrap().len(), 1);
    // The same declaration again changes nothing; another is refused.
    assert!(commit(&mut image, declare_x(exchange("logs", true))).unwrap().is_empty());
    let mut other = exchange("logs", true);
    other.kind = ExchangeKind::Fanout;
    assert!(matches!(commit(&mut image, declare_x(other)), Err(MetadataError::InvalidRequest(_))));
    assert!(matches!(
        commit(&mut image, declare_x(exchange("amq.mine", false))),
        Err(MetadataError::InvalidRequest(_))
    ));

    let args: Headers = [("x-message-ttl".to_string(), HeaderValue::Int(60_000))].into();
    commit(&mut image, declare_queue("q1", args.clone(), QueueType::Classic)).unwrap();
    commit(&mut image, declare_queue("q2", Headers::new(), QueueType::Classic)).unwrap();
    assert_eq!(image.amqp["/"].queues["q1"].kind, QueueKind::Classic { node: 1 });
    // Redeclared: the same x- arguments pass, others and another type are refused.
    assert!(commit(&mut image, declare_queue("q1", args, QueueType::Classic)).unwrap().is_empty());
    let ttl: Headers = [("x-message-ttl".to_string(), HeaderValue::Int(1))].into();
    assert!(commit(&mut image, declare_queue("q1", ttl, QueueType::Classic)).is_err());
    let quorum = QueueType::Quorum { group_size: None };
    assert!(commit(&mut image, declare_queue("q1", Headers::new(), quorum)).is_err());

    let bind = |b: BindingDef| AmqpRequest::Bind { vhost: "/".into(), binding: b };
    commit(&mut image, bind(binding("logs", "q1", "a.*"))).unwrap();
    commit(&mut image, bind(binding("logs", "q2", "b.#"))).unwrap();
    commit(&mut image, bind(binding("amq.topic", "q1", "x"))).unwrap();
    assert!(commit(&mut image, bind(binding("logs", "q1", "a.*"))).unwrap().is_empty(), "bound already");
    assert!(matches!(commit(&mut image, bind(binding("nope", "q1", ""))), Err(MetadataError::ResourceNotFound(_))));
    assert!(matches!(commit(&mut image, bind(binding("logs", "nope", ""))), Err(MetadataError::ResourceNotFound(_))));
    assert!(matches!(commit(&mut image, bind(binding("", "q1", "q1"))), Err(MetadataError::InvalidRequest(_))));
    assert_eq!(image.amqp["/"].bindings.len(), 3);

    // The image survives a snapshot round trip; an older one reads as empty.
    let json = serde_json::to_string(&image).unwrap();
    assert_eq!(serde_json::from_str::<MetadataImage>(&json).unwrap(), image);
    let mut old: serde_json::Value = serde_json::from_str(&json).unwrap();
    old.as_object_mut().unwrap().remove("amqp");
    assert!(serde_json::from_value::<MetadataImage>(old).unwrap().amqp.is_empty());

    // Deleting q1 drops its bindings; `logs` keeps q2's, so it stays.
    commit(&mut image, AmqpRequest::DeleteQueue { vhost: "/".into(), name: "q1".into() }).unwrap();
    let defs = &image.amqp["/"];
    assert_eq!(defs.bindings, vec![binding("logs", "q2", "b.#")]);
    assert!(defs.exchanges.contains_key("logs"));
    // Its last binding gone, the auto-delete exchange goes in the same entry.
    let records =
        commit(&mut image, AmqpRequest::Unbind { vhost: "/".into(), binding: binding("logs", "q2", "b.#") }).unwrap();
    assert_eq!(records.len(), 2, "{records:?}");
    assert!(!image.amqp["/"].exchanges.contains_key("logs"));
    // Absent things: deleting or unbinding them changes nothing.
    assert!(commit(&mut image, AmqpRequest::DeleteQueue { vhost: "/".into(), name: "q1".into() }).unwrap().is_empty());
    let del_x = AmqpRequest::DeleteExchange { vhost: "/".into(), name: "logs".into(), if_unused: false };
    assert!(commit(&mut image, del_x).unwrap().is_empty());
    let del_builtin = AmqpRequest::DeleteExchange { vhost: "/".into(), name: "amq.topic".into(), if_unused: false };
    assert!(commit(&mut image, del_builtin).is_err());
    commit(&mut image, AmqpRequest::DeleteQueue { vhost: "/".into(), name: "q2".into() }).unwrap();
    assert!(image.amqp.is_empty(), "an empty vhost leaves no entry: {:?}", image.amqp);
}

#[test]
fn an_exchange_in_use_is_kept_with_if_unused_and_its_bindings_go_with_it() {
    let mut image = with_vhosts(&["v"]);
    let declare_x = |x: ExchangeDef| AmqpRequest::DeclareExchange { vhost: "v".into(), exchange: x };
    commit(&mut image, declare_x(exchange("a", false))).unwrap();
    commit(&mut image, declare_x(exchange("b", true))).unwrap();
    let e2e = BindingDef {
        source: "b".into(),
        destination: Destination::Exchange("a".into()),
        routing_key: "#".into(),
        arguments: Arguments::default(),
    };
    commit(&mut image, AmqpRequest::Bind { vhost: "v".into(), binding: e2e }).unwrap();
    let delete = |if_unused| AmqpRequest::DeleteExchange { vhost: "v".into(), name: "a".into(), if_unused };
    assert!(matches!(commit(&mut image, delete(true)), Err(MetadataError::InvalidRequest(_))));
    // Deleting `a` drops b -> a, b's only binding: auto-delete `b` goes too.
    let records = commit(&mut image, delete(false)).unwrap();
    assert_eq!(records.len(), 2, "{records:?}");
    assert!(image.amqp.is_empty());
}

#[test]
fn a_quorum_queue_is_declared_with_its_topic_in_one_entry() {
    let mut image = with_vhosts(&["/"]);
    let records =
        commit(&mut image, declare_queue("orders", Headers::new(), QueueType::Quorum { group_size: Some(3) })).unwrap();
    let QueueKind::Quorum { topic_id } = image.amqp["/"].queues["orders"].kind else { panic!("not quorum") };
    let topic = image.topic_by_id(topic_id).unwrap();
    assert!(topic.internal && topic.name.starts_with(QUEUE_TOPIC_PREFIX), "{}", topic.name);
    assert_eq!(topic.name, queue_topic_name("/", "orders", image.applied_index));
    assert!(matches!(records[0], MetadataRecord::CreateTopic { .. }));
    // Deleting the queue deletes its topic in the same entry.
    let records = commit(&mut image, AmqpRequest::DeleteQueue { vhost: "/".into(), name: "orders".into() }).unwrap();
    assert!(records.contains(&MetadataRecord::DeleteTopic { id: topic_id }), "{records:?}");
    assert!(image.topics.is_empty() && image.amqp.is_empty());
    // A queue record naming a topic that does not exist is refused by the apply.
    let orphan = MetadataRecord::Amqp(AmqpRecord::DeclareQueue {
        vhost: "/".into(),
        queue: QueueDef {
            name: "x".into(),
            auto_delete: false,
            arguments: Arguments::default(),
            kind: QueueKind::Quorum { topic_id: Uuid::from_u128(7) },
        },
    });
    assert_eq!(image.apply(9, &orphan), Err(MetadataError::UnknownTopicId(Uuid::from_u128(7))));
    assert!(image.amqp.is_empty());
    // Topic names are valid whatever the queue's name, and distinct per entry.
    let name = queue_topic_name("/", "a queue/with ünïcode", 5);
    assert!(name.chars().all(|c| c.is_ascii_alphanumeric() || "._-".contains(c)), "{name}");
    assert_ne!(name, queue_topic_name("/", "a queue/with ünïcode", 6));
}

#[test]
fn the_queue_type_comes_from_the_arguments_or_the_default() {
    let quorum = QueueType::Quorum { group_size: None };
    let args =
        |pairs: &[(&str, HeaderValue)]| -> Headers { pairs.iter().map(|(k, v)| (k.to_string(), v.clone())).collect() };
    assert_eq!(QueueType::from_arguments(&Headers::new(), quorum), Ok(quorum));
    assert_eq!(QueueType::from_arguments(&Headers::new(), QueueType::Classic), Ok(QueueType::Classic));
    let classic = args(&[("x-queue-type", HeaderValue::Str("classic".into()))]);
    assert_eq!(QueueType::from_arguments(&classic, quorum), Ok(QueueType::Classic));
    let sized = args(&[
        ("x-queue-type", HeaderValue::Bytes(b"quorum".to_vec())),
        ("x-quorum-initial-group-size", HeaderValue::Int(5)),
    ]);
    assert_eq!(QueueType::from_arguments(&sized, QueueType::Classic), Ok(QueueType::Quorum { group_size: Some(5) }));
    for bad in [
        args(&[("x-queue-type", HeaderValue::Str("stream".into()))]),
        args(&[("x-queue-type", HeaderValue::Int(1))]),
        args(&[("x-quorum-initial-group-size", HeaderValue::Int(0))]),
        args(&[("x-quorum-initial-group-size", HeaderValue::Str("3".into()))]),
    ] {
        assert!(QueueType::from_arguments(&bad, quorum).is_err(), "{bad:?}");
    }
}

#[test]
fn arguments_compare_floats_by_bits() {
    let a = Arguments([("x".to_string(), HeaderValue::Float(f64::NAN))].into());
    assert_eq!(a, a.clone());
    let b = Arguments([("x".to_string(), HeaderValue::Float(1.0))].into());
    assert_ne!(a, b);
}

#[test]
fn vhosts_are_records_and_take_what_they_hold_with_them() {
    use crate::security::{AclBinding, AclEntry, Operation, PatternType, Permission, ResourcePattern, ResourceType};
    let mut image = MetadataImage::default();
    let x = |vhost: &str| AmqpRequest::DeclareExchange { vhost: vhost.into(), exchange: exchange("logs", false) };
    // Nothing is created in a vhost that does not exist.
    assert!(matches!(commit(&mut image, x("orders")), Err(MetadataError::ResourceNotFound(_))));
    let quorum = QueueType::Quorum { group_size: None };
    let q = |vhost: &str| AmqpRequest::DeclareQueue {
        vhost: vhost.into(),
        name: "jobs".into(),
        auto_delete: false,
        arguments: Arguments::default(),
        queue_type: quorum,
    };
    assert!(matches!(commit(&mut image, q("orders")), Err(MetadataError::ResourceNotFound(_))));
    // MQTT's reserved vhost needs no record, and cannot be made one.
    commit(&mut image, q(crate::metadata::MQTT_VHOST)).unwrap();
    let reserved = AmqpRequest::CreateVhost { name: crate::metadata::MQTT_VHOST.into() };
    assert!(matches!(commit(&mut image, reserved), Err(MetadataError::InvalidRequest(_))));
    assert!(matches!(
        commit(&mut image, AmqpRequest::CreateVhost { name: String::new() }),
        Err(MetadataError::InvalidRequest(_))
    ));

    let create = |name: &str| AmqpRequest::CreateVhost { name: name.into() };
    assert_eq!(commit(&mut image, create("orders")).unwrap().len(), 1);
    assert!(commit(&mut image, create("orders")).unwrap().is_empty(), "created already");
    commit(&mut image, create("other")).unwrap();
    assert_eq!(image.vhosts.keys().map(String::as_str).collect::<Vec<_>>(), ["orders", "other"]);
    let first = image.vhosts["orders"];
    commit(&mut image, x("orders")).unwrap();
    commit(&mut image, q("orders")).unwrap();
    commit(&mut image, x("other")).unwrap();
    commit(&mut image, AmqpRequest::Bind { vhost: "orders".into(), binding: binding("logs", "jobs", "#") }).unwrap();
    let QueueKind::Quorum { topic_id } = image.amqp["orders"].queues["jobs"].kind else { panic!("not quorum") };
    let acl = |name: &str, resource_type, pattern_type| AclBinding {
        pattern: ResourcePattern { resource_type, name: name.into(), pattern_type },
        entry: AclEntry {
            principal: "User:alice".parse().unwrap(),
            host: "*".into(),
            operation: Operation::Describe,
            permission: Permission::Allow,
        },
    };
    let open_orders = acl("orders", ResourceType::Vhost, PatternType::Literal);
    let open_other = acl("other", ResourceType::Vhost, PatternType::Literal);
    let queue_acl = acl("orders/", ResourceType::Queue, PatternType::Prefixed);
    for a in [&open_orders, &open_other, &queue_acl] {
        image.apply(image.applied_index + 1, &MetadataRecord::CreateAcl(a.clone())).unwrap();
    }

    // Deleting a vhost removes, in one entry, its definitions, its quorum
    // queues' topics and the ACL that opens it; other vhosts keep theirs.
    let records = commit(&mut image, AmqpRequest::DeleteVhost { name: "orders".into() }).unwrap();
    assert!(records.contains(&MetadataRecord::DeleteTopic { id: topic_id }), "{records:?}");
    assert!(records.contains(&MetadataRecord::DeleteAcl(open_orders.clone())), "{records:?}");
    assert!(!image.vhosts.contains_key("orders") && !image.amqp.contains_key("orders"));
    assert!(image.topic_by_id(topic_id).is_none());
    assert!(!image.acls.contains(&open_orders) && image.acls.contains(&open_other));
    assert!(image.acls.contains(&queue_acl), "only the vhost's own ACL goes (names of others are ambiguous)");
    assert!(image.amqp["other"].exchanges.contains_key("logs"));
    assert!(matches!(
        commit(&mut image, AmqpRequest::DeleteVhost { name: "orders".into() }),
        Err(MetadataError::ResourceNotFound(_))
    ));
    // Created again, it is empty, and another generation.
    commit(&mut image, create("orders")).unwrap();
    assert!(!image.amqp.contains_key("orders"));
    assert!(image.vhosts["orders"] > first, "{:?}", image.vhosts);

    // The records survive a snapshot round trip; an older snapshot has none.
    let json = serde_json::to_string(&image).unwrap();
    assert_eq!(serde_json::from_str::<MetadataImage>(&json).unwrap(), image);
    let mut old: serde_json::Value = serde_json::from_str(&json).unwrap();
    old.as_object_mut().unwrap().remove("vhosts");
    assert!(serde_json::from_value::<MetadataImage>(old).unwrap().vhosts.is_empty());
    // A record deleting an absent vhost is refused by the apply.
    let gone = MetadataRecord::Amqp(AmqpRecord::DeleteVhost { name: "nope".into() });
    assert!(matches!(image.apply(image.applied_index + 1, &gone), Err(MetadataError::ResourceNotFound(_))));
}
