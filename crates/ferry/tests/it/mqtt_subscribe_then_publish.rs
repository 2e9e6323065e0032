//! A subscription is in effect before its SUBACK goes out: a message
//! another client publishes as soon as the SUBACK has arrived reaches the
//! subscriber, every time (clean and persistent sessions, QoS 0 and 1,
//! MQTT 3.1.1 and 5).

use rumqttc::{Packet, QoS};

use crate::mqtt_clients::{client, expect, publishes};
use crate::support::Broker;

/// Rounds per case; each subscribes to a fresh topic.
const ROUNDS: usize = 50;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_publish_right_after_the_suback_reaches_the_new_subscriber() {
    let dir = tempfile::tempdir().unwrap();
    let b = Broker::start(dir.path());
    let (publisher, _prx) = client(b.mqtt_port, "pub", true, |_| {}).await;
    for clean in [true, false] {
        let id = format!("sub-{clean}");
        let (sub, mut rx) = client(b.mqtt_port, &id, clean, |_| {}).await;
        for round in 0..ROUNDS {
            let qos = if round % 2 == 0 { QoS::AtMostOnce } else { QoS::AtLeastOnce };
            let topic = format!("race/{clean}/{round}");
            sub.subscribe(&topic, QoS::AtLeastOnce).await.unwrap();
            expect(&mut rx, |p| matches!(p, Packet::SubAck(_))).await;
            publisher.publish(&topic, qos, false, format!("m{round}")).await.unwrap();
            let got = publishes(&mut rx, 1).await;
            assert_eq!((got[0].0.as_str(), got[0].1.as_str()), (topic.as_str(), format!("m{round}").as_str()));
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mqtt5_a_publish_right_after_the_suback_reaches_the_new_subscriber() {
    use rumqttc::v5::mqttbytes::QoS;
    use rumqttc::v5::mqttbytes::v5::Packet;

    use crate::mqtt_v5::{client, expect, next_publish};

    let dir = tempfile::tempdir().unwrap();
    let b = Broker::start(dir.path());
    let (publisher, _prx) = client(b.mqtt_port, "pub5", |_| {}).await;
    let (sub, mut rx) = client(b.mqtt_port, "sub5", |_| {}).await;
    for round in 0..ROUNDS {
        let qos = if round % 2 == 0 { QoS::AtMostOnce } else { QoS::AtLeastOnce };
        let topic = format!("race5/{round}");
        sub.subscribe(&topic, QoS::AtLeastOnce).await.unwrap();
        expect(&mut rx, |p| matches!(p, Packet::SubAck(_))).await;
        publisher.publish(&topic, qos, false, format!("m{round}")).await.unwrap();
        let p = next_publish(&mut rx).await;
        assert_eq!((&p.topic[..], &p.payload[..]), (topic.as_bytes(), format!("m{round}").as_bytes()));
    }
}
