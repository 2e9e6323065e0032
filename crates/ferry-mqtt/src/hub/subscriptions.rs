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
use crate::session::{Session, sub_options};
use ferry_broker::metadata::MqttSubscription;

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
    /// The subscription identifiers the copy carries.
    pub(super) ids: Vec<u32>,
    /// Retain as published.
    pub(super) rap: bool,
}

/// Splits `$share/group/filter` into (group, filter).
pub fn split_shared(filter: &str) -> Option<(&str, &str)> {
    filter.strip_prefix("$share/")?.split_once('/')
}

impl Hub {
    pub(super) fn index(&self, client_id: &Arc<str>, sub: &MqttSubscription) {
        let full: Arc<str> = sub.filter.as_str().into();
        let (share, filter) = match split_shared(&sub.filter) {
            Some((group, filter)) => (Some(Arc::from(group)), filter),
            None => (None, sub.filter.as_str()),
        };
        let entry = SubEntry { opts: sub_options(sub), id: sub.id, share };
        write(&self.tree).insert(filter, (client_id.clone(), full), entry);
    }

    pub(super) fn unindex(&self, client_id: &Arc<str>, full: &str) {
        let filter = split_shared(full).map_or(full, |(_, f)| f);
        write(&self.tree).remove(filter, &(client_id.clone(), full.into()));
    }

    /// Adds or replaces a subscription; returns whether it existed.
    pub fn subscribe(&self, session: &Session, sub: MqttSubscription) -> bool {
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
    /// subscriptions (more where their options differ, see [`Copies`]), leaving
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
        let mut targets: Vec<(Arc<str>, u8, Vec<u32>, bool)> = Vec::with_capacity(direct.len());
        for (client, copies) in direct {
            copies.each(|c| targets.push((client.clone(), c.qos, c.ids, c.rap)));
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
            targets.push((client.clone(), e.opts.qos, e.id.into_iter().collect(), e.opts.retain_as_published));
        }
        targets
            .into_iter()
            .filter_map(|(c, qos, ids, rap)| sessions.get(&c).map(|s| Target { session: s.clone(), qos, ids, rap }))
            .collect()
    }
}

/// One client's subscriptions matching a message, as the copies it gets
/// (MQTT 5 §3.3.4). Subscriptions with the same options (QoS,
/// retain-as-published; no-local ones from the publisher are left out
/// before) share one copy carrying all their identifiers; where options
/// differ, each set gets a copy of its own, at its QoS. When none of them
/// has an identifier the client cannot tell copies apart, so they merge into
/// one at the highest QoS (retain-as-published if any asks for it), as for
/// MQTT 3.1.1.
#[derive(Default)]
struct Copies {
    first: Option<MsgCopy>,
    /// Copies for further option sets (rarely any: no allocation then).
    more: Vec<MsgCopy>,
    /// Some subscription carries an identifier.
    any_id: bool,
}

#[derive(Default)]
struct MsgCopy {
    qos: u8,
    rap: bool,
    /// Identifiers of the subscriptions this copy stands for, in match order.
    ids: Vec<u32>,
}

impl MsgCopy {
    fn add_id(&mut self, id: Option<u32>) {
        if let Some(id) = id
            && !self.ids.contains(&id)
        {
            self.ids.push(id);
        }
    }
}

impl Copies {
    fn add(&mut self, qos: u8, id: Option<u32>, rap: bool) {
        self.any_id |= id.is_some();
        let same = |c: &&mut MsgCopy| c.qos == qos && c.rap == rap;
        if let Some(c) = self.first.iter_mut().chain(self.more.iter_mut()).find(same) {
            c.add_id(id);
            return;
        }
        let mut c = MsgCopy { qos, rap, ids: Vec::new() };
        c.add_id(id);
        match self.first {
            None => self.first = Some(c),
            Some(_) => self.more.push(c),
        }
    }

    /// Hands each copy to `f`.
    fn each(self, mut f: impl FnMut(MsgCopy)) {
        let all = self.first.into_iter().chain(self.more);
        if self.any_id {
            all.for_each(f);
        } else if let Some(c) =
            all.reduce(|a, b| MsgCopy { qos: a.qos.max(b.qos), rap: a.rap || b.rap, ids: Vec::new() })
        {
            f(c);
        }
    }
}
