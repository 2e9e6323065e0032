//! The subscription index: every session's filters in one topic tree, keyed
//! by (client id, filter as subscribed), and the question routing asks of
//! it: which sessions get which copy of a message (shared subscriptions
//! take turns, preferring connected members).

use std::collections::HashMap;
use std::sync::Arc;

use crate::topic_tree::TopicTree;
use ferry_util::sync::{lock, read, write};

use super::Hub;
use crate::message::Message;
use crate::packet::SubOptions;
use crate::session::{Session, SubRecord};

/// One subscription as the index keeps it.
#[derive(Clone)]
pub(super) struct SubEntry {
    opts: SubOptions,
    id: Option<u32>,
    /// Shared subscription group, and the full filter naming the group.
    share: Option<Arc<str>>,
}

/// Subscriptions keyed by (client id, filter as subscribed).
pub(super) type SubscriptionIndex = TopicTree<(Arc<str>, Arc<str>), SubEntry>;

/// One copy of a message for one session.
pub(super) struct Target {
    pub(super) session: Arc<Session>,
    /// The subscription's QoS (the delivery gets the lower of it and the message's).
    pub(super) qos: u8,
    /// The subscription identifier the copy carries.
    pub(super) id: Option<u32>,
    /// Retain as published.
    pub(super) rap: bool,
}

/// Splits `$share/group/filter` into (group, filter).
pub fn split_shared(filter: &str) -> Option<(&str, &str)> {
    filter.strip_prefix("$share/")?.split_once('/')
}

impl Hub {
    pub(super) fn index(&self, client_id: &Arc<str>, sub: &SubRecord) {
        let full: Arc<str> = sub.filter.as_str().into();
        let (share, filter) = match split_shared(&sub.filter) {
            Some((group, filter)) => (Some(Arc::from(group)), filter),
            None => (None, sub.filter.as_str()),
        };
        let entry = SubEntry { opts: sub.options(), id: sub.id, share };
        write(&self.tree).insert(filter, (client_id.clone(), full), entry);
    }

    pub(super) fn unindex(&self, client_id: &Arc<str>, full: &str) {
        let filter = split_shared(full).map_or(full, |(_, f)| f);
        write(&self.tree).remove(filter, &(client_id.clone(), full.into()));
    }

    /// Adds or replaces a subscription; returns whether it existed.
    pub fn subscribe(&self, session: &Session, sub: SubRecord) -> bool {
        let mut st = session.lock();
        self.index(&session.client_id, &sub);
        st.subscriptions.insert(sub.filter.as_str().into(), sub).is_some()
    }

    /// Removes a subscription; returns whether it existed.
    pub fn unsubscribe(&self, session: &Session, filter: &str) -> bool {
        let mut st = session.lock();
        let existed = st.subscriptions.remove(filter).is_some();
        if existed {
            self.unindex(&session.client_id, filter);
        }
        existed
    }

    /// The copies `msg` goes out as: one per client with matching
    /// subscriptions (more for distinct subscription identifiers), leaving
    /// out the publisher's no-local ones, and one per shared group.
    pub(super) fn targets(&self, msg: &Message) -> Vec<Target> {
        let mut direct: HashMap<Arc<str>, Copies> = HashMap::new();
        let mut shared: HashMap<Arc<str>, Vec<(Arc<str>, SubEntry)>> = HashMap::new();
        read(&self.tree).for_each_match(&msg.topic, |(client, full), e| {
            if e.share.is_some() {
                shared.entry(full.clone()).or_default().push((client.clone(), e.clone()));
            } else if !(e.opts.no_local && msg.origin.as_deref() == Some(&**client)) {
                direct.entry(client.clone()).or_default().add(e.opts.qos, e.id, e.opts.retain_as_published);
            }
        });
        let mut targets: Vec<(Arc<str>, u8, Option<u32>, bool)> = Vec::with_capacity(direct.len());
        for (client, copies) in direct {
            targets.extend(copies.into_copies().map(|c| (client.clone(), c.qos, c.id, c.rap)));
        }
        let sessions = lock(&self.sessions);
        for (full, mut members) in shared {
            members.sort_by(|a, b| a.0.cmp(&b.0));
            let start = {
                let mut next = lock(&self.shared_next);
                let n = next.entry(full).or_insert(0);
                *n = n.wrapping_add(1);
                *n
            };
            // Round robin, preferring members that are connected.
            let online = |c: &Arc<str>| sessions.get(c).is_some_and(|s| s.lock().online.is_some());
            let len = members.len();
            let pick = (0..len).map(|i| (start + i) % len).find(|&i| online(&members[i].0)).unwrap_or(start % len);
            let (client, e) = &members[pick];
            targets.push((client.clone(), e.opts.qos, e.id, e.opts.retain_as_published));
        }
        targets
            .into_iter()
            .filter_map(|(c, qos, id, rap)| sessions.get(&c).map(|s| Target { session: s.clone(), qos, id, rap }))
            .collect()
    }
}

/// One client's subscriptions matching a message, as the copies it gets.
/// Merged into one copy (the highest QoS, retain-as-published if any asks
/// for it) unless they carry different subscription identifiers: the codec
/// sends one identifier per PUBLISH, so then each identifier gets a copy of
/// its own, as MQTT 5 §3.3.4 allows ("further copies of the message, one
/// for each additional matching subscription", each with the identifier of
/// its subscription).
#[derive(Default)]
struct Copies {
    first: MsgCopy,
    /// Copies for further identifiers (rarely any: no allocation then).
    more: Vec<MsgCopy>,
}

#[derive(Clone, Copy, Default)]
struct MsgCopy {
    qos: u8,
    id: Option<u32>,
    rap: bool,
}

impl Copies {
    fn add(&mut self, qos: u8, id: Option<u32>, rap: bool) {
        let distinct = |c: &MsgCopy| matches!((c.id, id), (Some(a), Some(b)) if a != b);
        let c = if distinct(&self.first) {
            if let Some(i) = self.more.iter().position(|c| c.id == id) {
                &mut self.more[i]
            } else {
                self.more.push(MsgCopy { qos: 0, id, rap: false });
                self.more.last_mut().expect("just pushed")
            }
        } else {
            &mut self.first
        };
        c.qos = c.qos.max(qos);
        c.id = c.id.or(id);
        c.rap |= rap;
    }

    fn into_copies(self) -> impl Iterator<Item = MsgCopy> {
        std::iter::once(self.first).chain(self.more)
    }
}
