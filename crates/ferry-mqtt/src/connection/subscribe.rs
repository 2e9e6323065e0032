//! SUBSCRIBE and UNSUBSCRIBE: filters checked and authorized, the session's
//! subscriptions changed (and persisted) through the hub, retained messages
//! queued after the SUBACK.

use std::sync::Arc;

use crate::topic_tree;

use super::{Conn, Violation, violation};
use crate::auth;
use crate::hub::split_shared;
use crate::packet::{self, Packet, reason};
use crate::session::Delivery;
use ferry_broker::metadata::MqttSubscription;

impl Conn {
    pub(super) async fn on_subscribe(
        &mut self,
        pid: u16,
        subscription_id: Option<u32>,
        filters: Vec<(Arc<str>, packet::SubOptions)>,
    ) -> Result<(), Violation> {
        if subscription_id == Some(0) {
            return Err(violation(reason::PROTOCOL_ERROR, "subscription identifier 0"));
        }
        let mut codes = Vec::with_capacity(filters.len());
        let mut retained = Vec::new();
        for (filter, opts) in filters {
            let (shared, plain) = match split_shared(&filter) {
                Some((group, f)) => {
                    if group.is_empty() || group.contains(['+', '#']) {
                        codes.push(reason::TOPIC_FILTER_INVALID);
                        continue;
                    }
                    (true, f)
                }
                None if filter.starts_with("$share/") => {
                    codes.push(reason::TOPIC_FILTER_INVALID);
                    continue;
                }
                None => (false, &*filter),
            };
            if !topic_tree::valid_filter(plain) {
                codes.push(reason::TOPIC_FILTER_INVALID);
                continue;
            }
            if shared && opts.no_local {
                return Err(violation(reason::PROTOCOL_ERROR, "no local on a shared subscription"));
            }
            if !auth::may_subscribe(&self.hub.config, self.username.as_deref(), &self.client_id, self.peer, plain) {
                codes.push(reason::NOT_AUTHORIZED);
                continue;
            }
            let qos = opts.qos.min(2);
            // Indexed synchronously, before the SUBACK is even queued, and
            // routing reads the live index: a publish that follows the
            // SUBACK finds the subscription (tests/it/mqtt_subscribe_then_publish.rs).
            let existed = self.hub.subscribe(
                &self.session,
                MqttSubscription {
                    filter: filter.to_string(),
                    qos,
                    no_local: opts.no_local,
                    retain_as_published: opts.retain_as_published,
                    retain_handling: opts.retain_handling,
                    id: subscription_id,
                },
            );
            codes.push(qos);
            if !shared && (opts.retain_handling == 0 || (opts.retain_handling == 1 && !existed)) {
                for m in self.hub.retained_for(plain) {
                    retained.push(Delivery {
                        qos: m.qos.min(qos),
                        msg: m,
                        retain: true,
                        subscription_ids: subscription_id.into_iter().collect(),
                        queue_offset: None,
                        dup: false,
                    });
                }
            }
        }
        self.persist().await;
        self.send(Packet::Suback { pid, codes });
        for d in retained {
            if let Err(e) = self.hub.enqueue(&self.session, d) {
                tracing::warn!(client = %self.client_id, error = %e, "could not queue a retained message");
            }
        }
        Ok(())
    }

    pub(super) async fn on_unsubscribe(&mut self, pid: u16, filters: &[Arc<str>]) {
        let codes: Vec<u8> =
            filters
                .iter()
                .map(|f| {
                    if self.hub.unsubscribe(&self.session, f) {
                        reason::SUCCESS
                    } else {
                        reason::NO_SUBSCRIPTION_EXISTED
                    }
                })
                .collect();
        self.persist().await;
        self.send(Packet::Unsuback { pid, codes });
    }
}
