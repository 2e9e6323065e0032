//! A compacted key/value store on an internal log
//! (`<data>/internal/<name>`): every put is a record keyed by the key, a
//! removal is a tombstone, and the in-memory map is rebuilt from the log at
//! start. Front-ends keep small keyed state here (one store per concern,
//! named by the caller); values are [`StoredRecord`]s, so headers travel too.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use ferry_log::{CleanupPolicy, FlushPolicy, Log, LogConfig};
use ferry_util::sync::lock;
use ferry_util::time::now_ms;

use crate::broker::Broker;
use crate::error::Result;
use crate::internal_log;
use crate::stored::{Durable, StoredRecord, decode_batch, encode_batch};

/// A compacted key/value store on one internal log, with the live entries
/// kept in memory.
pub struct KvStore {
    log: Arc<Log>,
    map: Mutex<BTreeMap<String, StoredRecord>>,
}

impl Broker {
    /// Opens (creating) the compacted store `<data>/internal/<name>`.
    /// `name` may contain `/` for sub-directories.
    pub fn kv_store(&self, name: &str) -> Result<Arc<KvStore>> {
        let config = LogConfig {
            cleanup_policy: CleanupPolicy::COMPACT,
            segment_bytes: 64 << 20,
            flush: FlushPolicy::Always,
            retention_ms: None,
            max_message_bytes: 256 << 20,
            ..LogConfig::default()
        };
        let log = self.log_manager().open(&self.config().data_dir.join("internal").join(name), config)?;
        let mut map = BTreeMap::new();
        internal_log::for_each_batch(&log, |h, batch| {
            for (_, r) in decode_batch(h, batch)? {
                let Some(key) = r.key.as_deref().map(|k| String::from_utf8_lossy(k).into_owned()) else { continue };
                if r.value.is_some() {
                    map.insert(key, r);
                } else {
                    map.remove(&key);
                }
            }
            Ok(())
        })?;
        Ok(Arc::new(KvStore { log, map: Mutex::new(map) }))
    }
}

impl KvStore {
    /// Sets `key` (`None` removes it). The returned [`Durable`] resolves once
    /// the change is on disk.
    pub fn put(&self, key: &str, value: Option<StoredRecord>) -> Result<Durable> {
        let mut map = lock(&self.map);
        if value.is_none() && !map.contains_key(key) {
            return Ok(Durable::ready());
        }
        let mut record = value.clone().unwrap_or_default();
        record.key = Some(key.as_bytes().to_vec());
        if record.timestamp <= 0 {
            record.timestamp = now_ms();
        }
        if value.is_none() {
            record.value = None;
        } else if record.value.is_none() {
            record.value = Some(Vec::new());
        }
        let info = self.log.append(&encode_batch(std::slice::from_ref(&record))?)?;
        match value {
            Some(_) => map.insert(key.to_string(), record),
            None => map.remove(key),
        };
        Ok(Durable::after(&self.log, info.last_offset + 1))
    }

    /// The live value of `key`, if any.
    pub fn get(&self, key: &str) -> Option<StoredRecord> {
        lock(&self.map).get(key).cloned()
    }

    /// Every entry for which `keep` holds, in key order.
    pub fn select(&self, mut keep: impl FnMut(&str, &StoredRecord) -> bool) -> Vec<(String, StoredRecord)> {
        lock(&self.map).iter().filter(|(k, v)| keep(k, v)).map(|(k, v)| (k.clone(), v.clone())).collect()
    }

    /// Number of live keys.
    pub fn len(&self) -> usize {
        lock(&self.map).len()
    }

    /// Whether no key is live.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::BrokerConfig;

    fn open(dir: &std::path::Path) -> Arc<Broker> {
        crate::testing::open(BrokerConfig { data_dir: dir.to_path_buf(), ..Default::default() }).unwrap()
    }

    #[tokio::test]
    async fn puts_and_removals_survive_a_restart() {
        let dir = tempfile::tempdir().unwrap();
        {
            let b = open(dir.path());
            let kv = b.kv_store("test/kv").unwrap();
            let v = |s: &str| StoredRecord { value: Some(s.as_bytes().to_vec()), ..Default::default() };
            kv.put("a", Some(v("1"))).unwrap().wait().await.unwrap();
            kv.put("b", Some(v("2"))).unwrap().wait().await.unwrap();
            kv.put("a", Some(v("3"))).unwrap().wait().await.unwrap();
            kv.put("b", None).unwrap().wait().await.unwrap();
            kv.put("c", Some(StoredRecord::default())).unwrap().wait().await.unwrap();
            b.shutdown();
        }
        let b = open(dir.path());
        let kv = b.kv_store("test/kv").unwrap();
        assert_eq!(kv.get("a").unwrap().value.as_deref(), Some(&b"3"[..]));
        assert!(kv.get("b").is_none());
        assert_eq!(kv.get("c").unwrap().value.as_deref(), Some(&b""[..]), "an empty value is not a tombstone");
        assert_eq!(kv.len(), 2);
    }

    #[tokio::test]
    async fn a_value_larger_than_one_replay_read_survives_a_restart() {
        let dir = tempfile::tempdir().unwrap();
        let big = vec![7u8; 5 << 20];
        {
            let b = open(dir.path());
            let kv = b.kv_store("test/big").unwrap();
            kv.put("small", Some(StoredRecord { value: Some(b"s".to_vec()), ..Default::default() }))
                .unwrap()
                .wait()
                .await
                .unwrap();
            kv.put("big", Some(StoredRecord { value: Some(big.clone()), ..Default::default() }))
                .unwrap()
                .wait()
                .await
                .unwrap();
            kv.put("after", Some(StoredRecord { value: Some(b"a".to_vec()), ..Default::default() }))
                .unwrap()
                .wait()
                .await
                .unwrap();
            b.shutdown();
        }
        let b = open(dir.path());
        let kv = b.kv_store("test/big").unwrap();
        assert_eq!(kv.get("big").unwrap().value, Some(big));
        assert_eq!(kv.get("after").unwrap().value.as_deref(), Some(&b"a"[..]));
        assert_eq!(kv.len(), 3);
    }
}
