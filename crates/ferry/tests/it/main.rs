//! End-to-end tests: the real `ferry` binary, driven by real clients.

mod amqp_access;
mod amqp_bad_input;
mod amqp_basic;
mod amqp_delayed;
mod amqp_durability;
mod amqp_kafka_bridge;
mod amqp_support;
mod amqp_ttl_dlx;
mod cli;
mod http;
mod kafka_admin;
mod kafka_bad_input;
mod kafka_clients;
mod kafka_groups;
mod kafka_idempotence;
mod kafka_pipelining;
mod kafka_txn;
mod metrics;
mod mqtt_bad_input;
mod mqtt_clients;
mod mqtt_scale;
mod mqtt_v5;
mod mqtt_v5_features;
mod mqtt_ws;
mod raw;
mod support;
