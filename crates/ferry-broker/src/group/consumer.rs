//! Consumer groups on the next-generation protocol (KIP-848): members only
//! heartbeat; the coordinator computes the assignment (a sticky uniform
//! assignor) and hands it out incrementally. A partition goes to its new
//! owner only after the previous owner's heartbeat stopped listing it, so no
//! partition is ever owned twice. Member epochs fence stale members.
//! Members subscribe by topic names, a regular expression, or both; the
//! group follows topics being created and growing (see `refresh`).

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use super::GroupError;

/// A topic partition by name.
pub type TopicPartition = (String, i32);

/// A member of a KIP-848 consumer group.
pub struct ConsumerMember {
    /// The member id (client-chosen, or a UUID the coordinator made).
    pub id: String,
    /// The group instance id of a static member; `None` for a dynamic one.
    pub instance_id: Option<String>,
    /// The client's rack, as it reported it.
    pub rack_id: Option<String>,
    /// The client id from the request header.
    pub client_id: String,
    /// The address the member connected from.
    pub client_host: String,
    /// The member epoch: the group epoch its current assignment belongs to.
    pub epoch: i32,
    previous_epoch: i32,
    /// Topic names it subscribes to (`subscribed_topic_names`).
    pub subscribed: Vec<String>,
    /// `subscribed_topic_regex`, matched against whole topic names.
    pub regex: Option<TopicRegex>,
    /// The topics it subscribes to now: the names plus the regex's matches.
    pub topics: BTreeSet<String>,
    /// What the assignor wants this member to own.
    pub target: BTreeSet<TopicPartition>,
    /// What the member was last told to own.
    pub assigned: BTreeSet<TopicPartition>,
    /// What the member last said it owns (it may still hold revoked ones).
    owned: BTreeSet<TopicPartition>,
    last_seen: Instant,
}

/// The server-side assignors (KIP-848's `group.remote.assignor`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Assignor {
    /// Even spread over all subscribed partitions, sticky.
    Uniform,
    /// Per topic, contiguous ranges of partitions for the sorted members.
    Range,
}

impl Assignor {
    /// The assignor a heartbeat's `server_assignor` names; `None` if unknown.
    pub fn from_name(name: &str) -> Option<Assignor> {
        match name {
            "uniform" => Some(Assignor::Uniform),
            "range" => Some(Assignor::Range),
            _ => None,
        }
    }

    /// The name clients use for it, as in Kafka.
    pub fn name(self) -> &'static str {
        match self {
            Assignor::Uniform => "uniform",
            Assignor::Range => "range",
        }
    }
}

/// A consumer group on the KIP-848 protocol.
pub struct ConsumerGroup {
    /// The `group.id` clients name the group by.
    pub id: String,
    /// The group epoch: bumped on every change of membership, subscriptions,
    /// assignor or subscribed topics' partitions.
    pub epoch: i32,
    /// The members by member id.
    pub members: BTreeMap<String, ConsumerMember>,
    /// The server-side assignor computing the target assignment.
    pub assignor: Assignor,
    /// Partition counts of the subscribed topics the targets were computed
    /// for (0: the topic does not exist yet).
    metadata: BTreeMap<String, usize>,
}

/// A subscription's regular expression (RE2 syntax, as Kafka's RE2/J),
/// matching whole topic names.
pub struct TopicRegex {
    /// The expression as the member sent it, without the anchors added.
    pub pattern: String,
    compiled: regex::Regex,
}

impl TopicRegex {
    /// Compiles `pattern`, anchored at both ends; INVALID_REGULAR_EXPRESSION if it does not compile.
    pub fn new(pattern: &str) -> Result<TopicRegex, GroupError> {
        let compiled =
            regex::Regex::new(&format!("^(?:{pattern})$")).map_err(|_| GroupError::InvalidRegularExpression)?;
        Ok(TopicRegex { pattern: pattern.to_string(), compiled })
    }

    /// Whether the whole topic name matches.
    pub fn matches(&self, topic: &str) -> bool {
        self.compiled.is_match(topic)
    }
}

/// What the group sees of the topics: partition counts by name, and every
/// name (asked for only when a member subscribes by regular expression).
pub struct Topics<'a> {
    /// A topic's partition count; 0 if it does not exist.
    pub partitions: &'a dyn Fn(&str) -> usize,
    /// Every topic name.
    pub names: &'a dyn Fn() -> Vec<String>,
}

/// One ConsumerGroupHeartbeat.
pub struct Heartbeat {
    /// The member id; empty on a first join lets the coordinator pick one.
    pub member_id: String,
    /// 0: join; >0: the member's current epoch; -1: leave; -2: a static member leaving for now.
    pub member_epoch: i32,
    /// The group instance id of a static member.
    pub instance_id: Option<String>,
    /// The client's rack.
    pub rack_id: Option<String>,
    /// The client id from the request header.
    pub client_id: String,
    /// The address the member connected from.
    pub client_host: String,
    /// None: unchanged since the last heartbeat.
    pub subscribed: Option<Vec<String>>,
    /// None: unchanged since the last heartbeat; empty: no regex.
    pub regex: Option<String>,
    /// None: unchanged since the last heartbeat.
    pub owned: Option<Vec<TopicPartition>>,
    /// The assignor the member asks for (None: the group's current one).
    pub server_assignor: Option<String>,
}

/// What a ConsumerGroupHeartbeat gets back.
pub struct HeartbeatResult {
    /// The member's id, newly made if it joined without one.
    pub member_id: String,
    /// The member's epoch now; echoes the request's negative epoch on leave.
    pub member_epoch: i32,
    /// Set when the member's assignment changed: everything it should own.
    pub assignment: Option<BTreeSet<TopicPartition>>,
}

impl ConsumerGroup {
    /// An empty group at group epoch `epoch`, with the uniform assignor.
    pub fn new(id: &str, epoch: i32) -> ConsumerGroup {
        ConsumerGroup {
            id: id.to_string(),
            epoch,
            members: BTreeMap::new(),
            assignor: Assignor::Uniform,
            metadata: BTreeMap::new(),
        }
    }

    /// The group state as Kafka names it: "Empty", "Reconciling" while any
    /// member has yet to reach its target at the group epoch, else "Stable".
    pub fn state(&self) -> &'static str {
        if self.members.is_empty() {
            "Empty"
        } else if self.members.values().all(|m| m.assigned == m.target && m.epoch == self.epoch) {
            "Stable"
        } else {
            "Reconciling"
        }
    }

    /// Handles one heartbeat.
    pub fn heartbeat(&mut self, hb: Heartbeat, now: Instant, topics: &Topics) -> Result<HeartbeatResult, GroupError> {
        let partitions = topics.partitions;
        let mut member_id = hb.member_id.clone();
        // `Some(None)`: the regex is cleared; `None`: unchanged.
        let regex = match hb.regex.as_deref() {
            None => None,
            Some("") => Some(None),
            Some(pattern) => Some(Some(TopicRegex::new(pattern)?)),
        };
        let wanted = match hb.server_assignor.as_deref() {
            Some(name) => Some(Assignor::from_name(name).ok_or(GroupError::UnsupportedAssignor)?),
            None => None,
        };
        if let Some(a) = wanted
            && a != self.assignor
        {
            // The latest choice wins, as a group-level setting would.
            self.assignor = a;
            if hb.member_epoch > 0 {
                self.bump(partitions);
            }
        }
        if hb.member_epoch < 0 {
            // -1: leave; -2: a static member leaving for now.
            if self.members.remove(&member_id).is_some() {
                self.bump(partitions);
            }
            return Ok(HeartbeatResult { member_id, member_epoch: hb.member_epoch, assignment: None });
        }
        if hb.member_epoch == 0 {
            if member_id.is_empty() {
                member_id = uuid::Uuid::new_v4().simple().to_string();
            }
            // A static member coming back replaces its previous incarnation.
            if let Some(inst) = &hb.instance_id
                && let Some(old) =
                    self.members.values().find(|m| m.instance_id.as_ref() == Some(inst) && m.id != member_id)
            {
                let old = old.id.clone();
                self.members.remove(&old);
            }
            let subscribed = hb.subscribed.clone().unwrap_or_default();
            let regex = regex.flatten();
            self.members.insert(
                member_id.clone(),
                ConsumerMember {
                    id: member_id.clone(),
                    instance_id: hb.instance_id.clone(),
                    rack_id: hb.rack_id.clone(),
                    client_id: hb.client_id.clone(),
                    client_host: hb.client_host.clone(),
                    epoch: 0,
                    previous_epoch: 0,
                    subscribed,
                    regex,
                    topics: BTreeSet::new(),
                    target: BTreeSet::new(),
                    assigned: BTreeSet::new(),
                    owned: BTreeSet::new(),
                    last_seen: now,
                },
            );
            self.refresh(topics, true);
        } else {
            let m = self.members.get_mut(&member_id).ok_or(GroupError::UnknownMemberId)?;
            if hb.member_epoch != m.epoch && hb.member_epoch != m.previous_epoch {
                return Err(GroupError::FencedMemberEpoch);
            }
            m.last_seen = now;
            let mut changed = false;
            if let Some(s) = hb.subscribed.as_ref()
                && *s != m.subscribed
            {
                m.subscribed = s.clone();
                changed = true;
            }
            if let Some(r) = regex
                && r.as_ref().map(|r| &r.pattern) != m.regex.as_ref().map(|r| &r.pattern)
            {
                m.regex = r;
                changed = true;
            }
            self.refresh(topics, changed);
        }
        if let Some(owned) = hb.owned
            && let Some(m) = self.members.get_mut(&member_id)
        {
            m.owned = owned.into_iter().collect();
        }
        let assignment = self.reconcile(&member_id);
        let m = &self.members[&member_id];
        Ok(HeartbeatResult { member_id, member_epoch: m.epoch, assignment })
    }

    /// Moves a member toward its target: revocations at once; additions of
    /// partitions no other member holds or still reports.
    fn reconcile(&mut self, member_id: &str) -> Option<BTreeSet<TopicPartition>> {
        let held_elsewhere: BTreeSet<TopicPartition> = self
            .members
            .values()
            .filter(|o| o.id != member_id)
            .flat_map(|o| o.assigned.iter().chain(o.owned.iter()).cloned())
            .collect();
        let epoch = self.epoch;
        let m = self.members.get_mut(member_id)?;
        let mut next: BTreeSet<TopicPartition> = m.assigned.intersection(&m.target).cloned().collect();
        next.extend(m.target.iter().filter(|p| !held_elsewhere.contains(*p)).cloned());
        if next != m.assigned || m.epoch != epoch {
            m.assigned = next;
            m.previous_epoch = m.epoch;
            m.epoch = epoch;
            return Some(m.assigned.clone());
        }
        None
    }

    /// Resolves every member's topics (names plus regex matches) and, if
    /// they or their partition counts changed since the targets were
    /// computed (or `changed`: membership or a subscription did), computes
    /// new ones: so a topic created or grown later reaches the group.
    pub fn refresh(&mut self, topics: &Topics, changed: bool) {
        let names = if self.members.values().any(|m| m.regex.is_some()) { (topics.names)() } else { Vec::new() };
        let mut metadata = BTreeMap::new();
        let mut moved = false;
        for m in self.members.values_mut() {
            let mut resolved: BTreeSet<String> = m.subscribed.iter().cloned().collect();
            if let Some(r) = &m.regex {
                resolved.extend(names.iter().filter(|n| r.matches(n)).cloned());
            }
            for t in &resolved {
                metadata.entry(t.clone()).or_insert_with(|| (topics.partitions)(t));
            }
            moved |= resolved != m.topics;
            m.topics = resolved;
        }
        if changed || moved || metadata != self.metadata {
            self.metadata = metadata;
            self.bump(topics.partitions);
        }
    }

    /// A membership or subscription change: new group epoch, new targets.
    fn bump(&mut self, partitions: &dyn Fn(&str) -> usize) {
        self.epoch += 1;
        tracing::info!(group = %self.id, epoch = self.epoch, members = self.members.len(), "group epoch bumped");
        self.assign(partitions);
    }

    fn assign(&mut self, partitions: &dyn Fn(&str) -> usize) {
        match self.assignor {
            Assignor::Uniform => self.assign_uniform(partitions),
            Assignor::Range => self.assign_range(partitions),
        }
    }

    /// Range: per topic, its subscribers (sorted by id) get contiguous
    /// ranges, the first ones one partition more when it does not divide.
    fn assign_range(&mut self, partitions: &dyn Fn(&str) -> usize) {
        let topics: BTreeSet<String> = self.members.values().flat_map(|m| m.topics.iter().cloned()).collect();
        let mut targets: BTreeMap<String, BTreeSet<TopicPartition>> =
            self.members.keys().map(|k| (k.clone(), BTreeSet::new())).collect();
        for topic in topics {
            let subscribers: Vec<&String> =
                self.members.values().filter(|m| m.topics.contains(&topic)).map(|m| &m.id).collect();
            let (n, m) = (partitions(&topic), subscribers.len());
            let mut next = 0;
            for (i, id) in subscribers.into_iter().enumerate() {
                let take = n / m + usize::from(i < n % m);
                if let Some(t) = targets.get_mut(id) {
                    t.extend((next..next + take).map(|p| (topic.clone(), p as i32)));
                }
                next += take;
            }
        }
        for (id, t) in targets {
            if let Some(m) = self.members.get_mut(&id) {
                m.target = t;
            }
        }
    }

    /// Uniform: every partition of a subscribed topic goes to one
    /// subscriber, as evenly as possible, keeping current owners where that
    /// stays balanced (sticky).
    fn assign_uniform(&mut self, partitions: &dyn Fn(&str) -> usize) {
        let topics: BTreeSet<String> = self.members.values().flat_map(|m| m.topics.iter().cloned()).collect();
        let all: Vec<TopicPartition> =
            topics.iter().flat_map(|t| (0..partitions(t) as i32).map(move |p| (t.clone(), p))).collect();
        let quota = all.len().div_ceil(self.members.len().max(1));
        let mut targets: BTreeMap<String, BTreeSet<TopicPartition>> =
            self.members.keys().map(|k| (k.clone(), BTreeSet::new())).collect();
        let mut unplaced = Vec::new();
        for tp in all {
            let keeper = self
                .members
                .values()
                .find(|m| m.target.contains(&tp) && m.topics.contains(&tp.0))
                .map(|m| m.id.clone())
                .filter(|id| targets[id].len() < quota);
            match keeper {
                Some(id) => {
                    targets.get_mut(&id).map(|t| t.insert(tp));
                }
                None => unplaced.push(tp),
            }
        }
        for tp in unplaced {
            let least = self
                .members
                .values()
                .filter(|m| m.topics.contains(&tp.0))
                .min_by_key(|m| (targets[&m.id].len(), m.id.clone()))
                .map(|m| m.id.clone());
            if let Some(id) = least {
                targets.get_mut(&id).map(|t| t.insert(tp));
            }
        }
        for (id, t) in targets {
            if let Some(m) = self.members.get_mut(&id) {
                m.target = t;
            }
        }
    }

    /// Removes members silent past `session_timeout`, and follows topic
    /// changes (`refresh`). True if any member went.
    pub fn expire(&mut self, now: Instant, session_timeout: Duration, topics: &Topics) -> bool {
        let before = self.members.len();
        self.members.retain(|_, m| now.duration_since(m.last_seen) <= session_timeout);
        let gone = self.members.len() != before;
        self.refresh(topics, gone);
        gone
    }

    /// Offset commits carry the member epoch.
    pub fn check_commit(&self, member_id: &str, epoch: i32) -> Option<GroupError> {
        match self.members.get(member_id) {
            None => Some(GroupError::UnknownMemberId),
            Some(m) if epoch > m.epoch || epoch < m.previous_epoch => Some(GroupError::StaleMemberEpoch),
            Some(_) => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hb(id: &str, epoch: i32, subscribed: Option<&[&str]>, owned: Option<&BTreeSet<TopicPartition>>) -> Heartbeat {
        Heartbeat {
            member_id: id.into(),
            member_epoch: epoch,
            instance_id: None,
            rack_id: None,
            client_id: "c".into(),
            client_host: "h".into(),
            subscribed: subscribed.map(|s| s.iter().map(std::string::ToString::to_string).collect()),
            owned: owned.map(|o| o.iter().cloned().collect()),
            server_assignor: None,
            regex: None,
        }
    }

    fn no_names() -> Vec<String> {
        Vec::new()
    }

    fn view(partitions: &dyn Fn(&str) -> usize) -> Topics<'_> {
        Topics { partitions, names: &no_names }
    }

    #[test]
    fn range_gives_contiguous_ranges_and_unknown_assignors_are_refused() {
        let five = |_: &str| 5;
        let five = view(&five);
        let now = Instant::now();
        let mut g = ConsumerGroup::new("g", 0);
        let mut join = |id: &str| {
            let mut h = hb(id, 0, Some(&["t"]), None);
            h.server_assignor = Some("range".into());
            g.heartbeat(h, now, &five).unwrap();
        };
        join("a");
        join("b");
        let t = |v: &[i32]| v.iter().map(|p| ("t".to_string(), *p)).collect::<BTreeSet<_>>();
        assert_eq!(g.assignor, Assignor::Range);
        assert_eq!(g.members["a"].target, t(&[0, 1, 2]));
        assert_eq!(g.members["b"].target, t(&[3, 4]));
        let mut bad = hb("c", 0, Some(&["t"]), None);
        bad.server_assignor = Some("magic".into());
        assert_eq!(g.heartbeat(bad, now, &five).err(), Some(GroupError::UnsupportedAssignor));
    }

    #[test]
    fn partitions_move_only_after_revocation_and_end_balanced() {
        let six = |t: &str| if t == "t" { 6 } else { 0 };
        let six = view(&six);
        let now = Instant::now();
        let mut g = ConsumerGroup::new("g", 0);
        let a = g.heartbeat(hb("a", 0, Some(&["t"]), None), now, &six).unwrap();
        let a_parts = a.assignment.unwrap();
        assert_eq!(a_parts.len(), 6);
        // b joins: a is told to give up 3, but b gets them only once a no longer owns them.
        let b = g.heartbeat(hb("b", 0, Some(&["t"]), None), now, &six).unwrap();
        assert_eq!(b.assignment.unwrap().len(), 0);
        let a2 = g.heartbeat(hb("a", a.member_epoch, None, Some(&a_parts)), now, &six).unwrap();
        let a_now = a2.assignment.unwrap();
        assert_eq!(a_now.len(), 3);
        let b2 = g.heartbeat(hb("b", b.member_epoch, None, Some(&BTreeSet::new())), now, &six).unwrap();
        assert!(b2.assignment.is_none_or(|x| x.is_empty()), "a still reports owning them");
        g.heartbeat(hb("a", a2.member_epoch, None, Some(&a_now)), now, &six).unwrap();
        let b3 = g.heartbeat(hb("b", b2.member_epoch, None, Some(&BTreeSet::new())), now, &six).unwrap();
        let b_now = b3.assignment.unwrap();
        assert_eq!(b_now.len(), 3);
        assert!(a_now.is_disjoint(&b_now));
        assert_eq!(g.state(), "Stable");
        // Stale epochs are fenced; unknown members are told so.
        assert_eq!(g.heartbeat(hb("a", 99, None, None), now, &six).err(), Some(GroupError::FencedMemberEpoch));
        assert_eq!(g.heartbeat(hb("zz", 3, None, None), now, &six).err(), Some(GroupError::UnknownMemberId));
        // b leaves: a gets everything back.
        g.heartbeat(hb("b", -1, None, None), now, &six).unwrap();
        let a4 = g.heartbeat(hb("a", g.members["a"].epoch, None, Some(&a_now)), now, &six).unwrap();
        assert_eq!(a4.assignment.unwrap().len(), 6);
    }

    #[test]
    fn silent_members_expire() {
        let two = |_: &str| 2;
        let two = view(&two);
        let now = Instant::now();
        let mut g = ConsumerGroup::new("g", 0);
        g.heartbeat(hb("a", 0, Some(&["t"]), None), now, &two).unwrap();
        assert!(!g.expire(now + Duration::from_secs(1), Duration::from_secs(45), &two));
        assert!(g.expire(now + Duration::from_secs(46), Duration::from_secs(45), &two));
        assert!(g.members.is_empty());
    }

    #[test]
    fn regex_subscriptions_follow_topics_as_they_appear_and_grow() {
        let counts = std::cell::RefCell::new(BTreeMap::from([("logs-a".to_string(), 2), ("other".to_string(), 3)]));
        let partitions = |t: &str| counts.borrow().get(t).copied().unwrap_or(0);
        let names = || counts.borrow().keys().cloned().collect::<Vec<_>>();
        let topics = Topics { partitions: &partitions, names: &names };
        let parts = |v: &[(&str, i32)]| v.iter().map(|(t, p)| (t.to_string(), *p)).collect::<BTreeSet<_>>();
        let now = Instant::now();
        let mut g = ConsumerGroup::new("g", 0);
        let mut join = hb("a", 0, Some(&[]), None);
        join.regex = Some("logs-.*".into());
        let a = g.heartbeat(join, now, &topics).unwrap();
        assert_eq!(a.assignment.unwrap(), parts(&[("logs-a", 0), ("logs-a", 1)]), "whole names only: not 'other'");
        // A matching topic appears: the next heartbeat brings it.
        counts.borrow_mut().insert("logs-b".into(), 1);
        let a2 = g.heartbeat(hb("a", a.member_epoch, None, None), now, &topics).unwrap();
        assert_eq!(a2.assignment.unwrap(), parts(&[("logs-a", 0), ("logs-a", 1), ("logs-b", 0)]));
        // A topic grows: housekeeping notices it without a heartbeat.
        counts.borrow_mut().insert("logs-a".into(), 3);
        let epoch = g.epoch;
        assert!(!g.expire(now, Duration::from_secs(45), &topics));
        assert_eq!(g.epoch, epoch + 1);
        assert!(g.members["a"].target.contains(&("logs-a".to_string(), 2)));
        // Nothing changed: no new epoch.
        g.expire(now, Duration::from_secs(45), &topics);
        assert_eq!(g.epoch, epoch + 1);
        // A regex that does not compile is refused.
        let mut bad = hb("b", 0, Some(&[]), None);
        bad.regex = Some("logs-(".into());
        assert_eq!(g.heartbeat(bad, now, &topics).err(), Some(GroupError::InvalidRegularExpression));
        assert!(!g.members.contains_key("b"));
        // An empty regex clears it; a named topic still counts.
        let mut clear = hb("a", g.members["a"].epoch, Some(&["other"]), None);
        clear.regex = Some(String::new());
        g.heartbeat(clear, now, &topics).unwrap();
        assert_eq!(g.members["a"].target, parts(&[("other", 0), ("other", 1), ("other", 2)]));
    }
}
