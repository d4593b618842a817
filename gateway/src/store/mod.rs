//! Persistence behind the [`Store`] trait; [`sled`](SledStore) is the embedded default.
//!
//! Two implementations: [`SledStore`], one directory on the gateway's disk, and
//! [`postgres::PgStore`], one database shared by several replicas (docs/scale-out.md). Every
//! write is durable when it returns.

use std::path::Path;

mod audit_runs;
pub mod postgres;

pub use audit_runs::RunIndex;

use crate::audit::index::{AuditIndex, IndexEntry, Location, Selector};

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("store at {path}: {source}")]
    Open {
        path: String,
        #[source]
        source: sled::Error,
    },
    #[error("store I/O: {0}")]
    Io(#[from] sled::Error),
    #[error("audit index I/O: {0}")]
    Index(#[from] std::io::Error),
    #[error("consent index image: {0}")]
    Image(std::io::Error),
    #[error("consent log {0}")]
    ConsentLog(String),
    #[error("shared store: {0}")]
    Postgres(#[from] tokio_postgres::Error),
    /// The shared store cannot be reached or did not answer in time.
    #[error("shared store unavailable: {0}")]
    Unavailable(String),
    /// Another replica changed the same thing first.
    #[error("concurrent change: {0}")]
    Conflict(String),
}

impl StoreError {
    /// Does this error mean the store is out of reach (rather than a bug or a bad record)?
    pub fn is_unavailable(&self) -> bool {
        match self {
            StoreError::Unavailable(_) => true,
            // No SQL state: the connection itself failed. Classes 08 (connection exception) and
            // 57 (operator intervention: shutting down, starting up) are the server going away or
            // not back yet.
            StoreError::Postgres(e) => {
                e.is_closed() || e.code().is_none_or(|c| c.code().starts_with("08") || c.code().starts_with("57"))
            }
            _ => false,
        }
    }
}

/// The operations the gateway needs from its persistence.
pub trait Store: AuditIndex + Send + Sync + std::fmt::Debug {
    /// `sled` or `postgres`.
    fn kind(&self) -> &'static str;
    fn meta_get(&self, key: &str) -> Result<Option<Vec<u8>>, StoreError>;
    /// Writes `value` under `key`; durable when it returns.
    fn meta_put(&self, key: &str, value: &[u8]) -> Result<(), StoreError>;
    /// Writes `value` under `key` only when `key` is absent; whether it did. Durable when it
    /// returns.
    fn meta_create(&self, key: &str, value: &[u8]) -> Result<bool, StoreError>;
    /// Replaces `old` by `new` under `key` only when `key` still holds `old` (another replica
    /// may have changed it); whether it did. Durable when it returns.
    fn meta_swap(&self, key: &str, old: &[u8], new: &[u8]) -> Result<bool, StoreError>;
    /// Every key that begins with `prefix`, with its value, in key order.
    fn meta_scan(&self, prefix: &str) -> Result<Vec<(String, Vec<u8>)>, StoreError>;

    /// The policy in force (the control plane's source of truth): its version and document.
    fn policy_current(&self) -> Result<Option<(u64, Vec<u8>)>, StoreError>;
    /// Makes `document` version `version` and records `change` under that version, both or
    /// neither; durable when it returns.
    fn policy_commit(&self, version: u64, document: &[u8], change: &[u8]) -> Result<(), StoreError>;
    /// Undoes the commit of `version` (its audit record could not be written): `previous`
    /// becomes current again and the change entry goes.
    fn policy_revert(&self, version: u64, previous: Option<(u64, &[u8])>) -> Result<(), StoreError>;
    /// The recorded changes with a version above `after`, oldest first, at most `limit`.
    fn policy_changes(&self, after: u64, limit: usize) -> Result<Vec<Vec<u8>>, StoreError>;
}

/// The embedded store: one directory, nothing to install.
#[derive(Debug)]
pub struct SledStore {
    db: sled::Db,
    /// The store's directory (the consent log and the index image live beside sled's files).
    dir: std::path::PathBuf,
    meta: sled::Tree,
    /// `current` → version ‖ document; `change` ‖ version → change.
    policy: sled::Tree,
    /// The audit indexes, in sorted run files under `audit-index/` (see [`RunIndex`] for why
    /// not in sled trees).
    audit: RunIndex,
}

impl SledStore {
    /// Opens the store with sled's default cache size (see [`SledStore::open_with_cache`]).
    pub fn open(path: &Path) -> Result<Self, StoreError> {
        Self::open_with_cache(path, crate::config::StoreConfig::default().cache_mb)
    }

    /// Opens the store; `cache_mb` bounds sled's page cache.
    pub fn open_with_cache(path: &Path, cache_mb: u64) -> Result<Self, StoreError> {
        let config =
            sled::Config::new().path(path).cache_capacity(cache_mb * 1024 * 1024).mode(sled::Mode::HighThroughput);
        // sled releases its file lock from a background thread after the last handle drops: a
        // reopen in the same process right after a close (the CLI, tests) may find it still
        // held for a few milliseconds. Another process holding it is still refused, after 2 s.
        let mut attempts = 0;
        let db = loop {
            match config.open() {
                Ok(db) => break db,
                Err(e) if attempts < 200 && e.to_string().contains("could not acquire lock") => {
                    attempts += 1;
                    std::thread::sleep(std::time::Duration::from_millis(10));
                }
                Err(source) => return Err(StoreError::Open { path: path.display().to_string(), source }),
            }
        };
        let meta = db.open_tree("meta")?;
        // Format 1 kept the audit indexes in sled trees; the runs are rebuilt from the trail
        // when the trail opens, so the old trees are simply dropped.
        if meta.get("format")?.as_deref() == Some(&b"passerelle-store-1"[..]) {
            for tree in ["audit_loc", "audit_subject", "audit_caller", "audit_time"] {
                db.drop_tree(tree)?;
            }
            meta.remove("audit_indexed_seq")?;
        }
        let store = SledStore {
            meta,
            policy: db.open_tree("policy")?,
            audit: RunIndex::open(&path.join("audit-index"))?,
            db,
            dir: path.to_owned(),
        };
        store.meta_put("format", b"passerelle-store-2")?;
        Ok(store)
    }
}

impl SledStore {
    /// The underlying database.
    pub fn db(&self) -> &sled::Db {
        &self.db
    }

    /// The store's directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Waits, at most `timeout`, until the audit index's upkeep has written every table and
    /// done every due merge (see [`RunIndex::settle`]); false on timeout.
    pub fn audit_settle(&self, timeout: std::time::Duration) -> bool {
        self.audit.settle(timeout)
    }

    /// Runs of the audit index on disk.
    pub fn audit_runs(&self) -> usize {
        self.audit.run_count()
    }
}

impl Store for SledStore {
    fn kind(&self) -> &'static str {
        "sled"
    }

    fn meta_get(&self, key: &str) -> Result<Option<Vec<u8>>, StoreError> {
        Ok(self.meta.get(key)?.map(|v| v.to_vec()))
    }

    fn meta_put(&self, key: &str, value: &[u8]) -> Result<(), StoreError> {
        self.meta.insert(key, value)?;
        self.db.flush()?;
        Ok(())
    }

    fn meta_create(&self, key: &str, value: &[u8]) -> Result<bool, StoreError> {
        let created = self.meta.compare_and_swap(key, None::<&[u8]>, Some(value))?.is_ok();
        self.db.flush()?;
        Ok(created)
    }

    fn meta_swap(&self, key: &str, old: &[u8], new: &[u8]) -> Result<bool, StoreError> {
        let swapped = self.meta.compare_and_swap(key, Some(old), Some(new))?.is_ok();
        self.db.flush()?;
        Ok(swapped)
    }

    fn meta_scan(&self, prefix: &str) -> Result<Vec<(String, Vec<u8>)>, StoreError> {
        self.meta
            .scan_prefix(prefix)
            .map(|kv| {
                let (k, v) = kv?;
                Ok((String::from_utf8_lossy(&k).into_owned(), v.to_vec()))
            })
            .collect()
    }

    fn policy_current(&self) -> Result<Option<(u64, Vec<u8>)>, StoreError> {
        Ok(self.policy.get(POLICY_CURRENT)?.and_then(|v| {
            let version = u64::from_be_bytes(v.get(..8)?.try_into().ok()?);
            Some((version, v[8..].to_vec()))
        }))
    }

    fn policy_commit(&self, version: u64, document: &[u8], change: &[u8]) -> Result<(), StoreError> {
        let mut current = Vec::with_capacity(8 + document.len());
        current.extend_from_slice(&be(version));
        current.extend_from_slice(document);
        let mut batch = sled::Batch::default();
        batch.insert(POLICY_CURRENT, current);
        batch.insert(change_key(version).as_slice(), change);
        // One batch on one tree is atomic; the flush makes it durable.
        self.policy.apply_batch(batch)?;
        self.db.flush()?;
        Ok(())
    }

    fn policy_revert(&self, version: u64, previous: Option<(u64, &[u8])>) -> Result<(), StoreError> {
        let mut batch = sled::Batch::default();
        match previous {
            Some((v, doc)) => {
                let mut current = be(v).to_vec();
                current.extend_from_slice(doc);
                batch.insert(POLICY_CURRENT, current);
            }
            None => batch.remove(POLICY_CURRENT),
        }
        batch.remove(change_key(version).as_slice());
        self.policy.apply_batch(batch)?;
        self.db.flush()?;
        Ok(())
    }

    fn policy_changes(&self, after: u64, limit: usize) -> Result<Vec<Vec<u8>>, StoreError> {
        let lo = change_key(after.saturating_add(1));
        let hi = change_key(u64::MAX);
        let mut out = Vec::new();
        for kv in self.policy.range(lo..=hi).take(limit) {
            out.push(kv?.1.to_vec());
        }
        Ok(out)
    }
}

const POLICY_CURRENT: &[u8] = b"current";

fn change_key(version: u64) -> [u8; 14] {
    let mut k = [0u8; 14];
    k[..6].copy_from_slice(b"change");
    k[6..].copy_from_slice(&be(version));
    k
}

fn be(v: u64) -> [u8; 8] {
    v.to_be_bytes()
}

impl AuditIndex for SledStore {
    fn audit_index(&self, entries: &[IndexEntry]) -> Result<(), StoreError> {
        Ok(self.audit.add(entries)?)
    }

    fn audit_flush(&self) -> Result<(), StoreError> {
        Ok(self.audit.flush()?)
    }

    fn audit_indexed_seq(&self) -> Result<u64, StoreError> {
        Ok(self.audit.indexed_seq())
    }

    fn audit_query(
        &self,
        selector: &Selector,
        from_ms: u64,
        to_ms: u64,
        limit: usize,
    ) -> Result<Vec<Location>, StoreError> {
        Ok(self.audit.query(selector, from_ms, to_ms, limit)?)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn survives_reopen() {
        let dir = tempfile::tempdir().unwrap();
        {
            let s = SledStore::open(dir.path()).unwrap();
            s.meta_put("k", b"v").unwrap();
        }
        let s = SledStore::open(dir.path()).unwrap();
        assert_eq!(s.meta_get("k").unwrap().as_deref(), Some(&b"v"[..]));
        assert_eq!(s.meta_get("format").unwrap().as_deref(), Some(&b"passerelle-store-2"[..]));
    }

    #[test]
    fn meta_create_swap_and_scan() {
        let dir = tempfile::tempdir().unwrap();
        let s = SledStore::open(dir.path()).unwrap();
        assert!(s.meta_create("x/1", b"a").unwrap());
        assert!(!s.meta_create("x/1", b"b").unwrap(), "a second create of one key");
        assert!(!s.meta_swap("x/1", b"b", b"c").unwrap(), "a swap from a value the key does not hold");
        assert!(s.meta_swap("x/1", b"a", b"c").unwrap());
        assert!(s.meta_create("x/2", b"d").unwrap());
        assert!(s.meta_create("y/1", b"e").unwrap());
        let found = s.meta_scan("x/").unwrap();
        assert_eq!(found, vec![("x/1".to_owned(), b"c".to_vec()), ("x/2".to_owned(), b"d".to_vec())]);
    }

    #[test]
    fn policy_versions_commit_revert_and_list() {
        let dir = tempfile::tempdir().unwrap();
        {
            let s = SledStore::open(dir.path()).unwrap();
            assert!(s.policy_current().unwrap().is_none());
            s.policy_commit(1, b"{\"a\":1}", b"c1").unwrap();
            s.policy_commit(2, b"{\"a\":2}", b"c2").unwrap();
            s.policy_commit(3, b"{\"a\":3}", b"c3").unwrap();
            s.policy_revert(3, Some((2, b"{\"a\":2}"))).unwrap();
        }
        let s = SledStore::open(dir.path()).unwrap();
        assert_eq!(s.policy_current().unwrap(), Some((2, b"{\"a\":2}".to_vec())));
        assert_eq!(s.policy_changes(0, 10).unwrap(), vec![b"c1".to_vec(), b"c2".to_vec()]);
        assert_eq!(s.policy_changes(1, 10).unwrap(), vec![b"c2".to_vec()]);
        assert_eq!(s.policy_changes(0, 1).unwrap(), vec![b"c1".to_vec()]);
        s.policy_revert(1, None).unwrap();
        s.policy_revert(2, None).unwrap();
        assert!(s.policy_current().unwrap().is_none());
    }
}
