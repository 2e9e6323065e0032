//! Kafka's range assignor, as a group leader runs it.

use std::collections::BTreeMap;

/// The assignor's name in JoinGroup.
pub const RANGE: &str = "range";

/// Per topic, members (in id order) subscribed to it each take a contiguous
/// range of partitions, the first ones one partition more.
/// `subscriptions`: member -> topics; `partitions`: topic -> partition
/// count. Returns member -> topic -> partitions, with every member present.
pub fn range_assign(
    subscriptions: &BTreeMap<String, Vec<String>>,
    partitions: &BTreeMap<String, i32>,
) -> BTreeMap<String, BTreeMap<String, Vec<i32>>> {
    let mut out: BTreeMap<String, BTreeMap<String, Vec<i32>>> =
        subscriptions.keys().map(|m| (m.clone(), BTreeMap::new())).collect();
    for (topic, &count) in partitions {
        let members: Vec<&String> = subscriptions.iter().filter(|(_, t)| t.contains(topic)).map(|(m, _)| m).collect();
        if members.is_empty() || count <= 0 {
            continue;
        }
        let n = i32::try_from(members.len()).unwrap_or(i32::MAX);
        let (per, extra) = (count / n, count % n);
        let mut next = 0;
        for (i, m) in (0i32..).zip(members) {
            let take = per + i32::from(i < extra);
            if take > 0 {
                out.entry(m.clone()).or_default().insert(topic.clone(), (next..next + take).collect());
            }
            next += take;
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn range_assignor_splits_like_kafka() {
        let subs: BTreeMap<String, Vec<String>> =
            [("a".to_string(), vec!["t".to_string(), "u".to_string()]), ("b".to_string(), vec!["t".to_string()])]
                .into();
        let parts: BTreeMap<String, i32> = [("t".to_string(), 5), ("u".to_string(), 2)].into();
        let a = range_assign(&subs, &parts);
        assert_eq!(a["a"]["t"], [0, 1, 2]);
        assert_eq!(a["b"]["t"], [3, 4]);
        assert_eq!(a["a"]["u"], [0, 1]);
        assert!(!a["b"].contains_key("u"));
    }
}
