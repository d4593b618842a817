//! Persistence behind the [`Store`] trait; [`sled`](SledStore) is the embedded default.
//!
//! The trait grows with the issues that need it (instruments, consents, roles, audit indexes
//! and checkpoints); today it holds the gateway's metadata. Every write is durable when it
//! returns.

use std::path::Path;

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
}

/// The operations the gateway needs from its persistence.
pub trait Store: AuditIndex + Send + Sync + std::fmt::Debug {
    /// `sled` or `postgres`.
    fn kind(&self) -> &'static str;
    fn meta_get(&self, key: &str) -> Result<Option<Vec<u8>>, StoreError>;
    /// Writes `value` under `key`; durable when it returns.
    fn meta_put(&self, key: &str, value: &[u8]) -> Result<(), StoreError>;

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
    meta: sled::Tree,
    /// `current` → version ‖ document; `change` ‖ version → change.
    policy: sled::Tree,
    /// seq → segment ‖ offset.
    audit_loc: sled::Tree,
    /// subject key ‖ 0 ‖ time ‖ seq → ().
    audit_subject: sled::Tree,
    /// caller ‖ 0 ‖ time ‖ seq → ().
    audit_caller: sled::Tree,
    /// time ‖ seq → ().
    audit_time: sled::Tree,
}

impl SledStore {
    /// Opens the store with sled's default cache size (see [`SledStore::open_with_cache`]).
    pub fn open(path: &Path) -> Result<Self, StoreError> {
        Self::open_with_cache(path, crate::config::StoreConfig::default().cache_mb)
    }

    /// Opens the store; `cache_mb` bounds sled's page cache.
    pub fn open_with_cache(path: &Path, cache_mb: u64) -> Result<Self, StoreError> {
        let db = sled::Config::new()
            .path(path)
            .cache_capacity(cache_mb * 1024 * 1024)
            .mode(sled::Mode::HighThroughput)
            .open()
            .map_err(|source| StoreError::Open { path: path.display().to_string(), source })?;
        let meta = db.open_tree("meta")?;
        let store = SledStore {
            meta,
            policy: db.open_tree("policy")?,
            audit_loc: db.open_tree("audit_loc")?,
            audit_subject: db.open_tree("audit_subject")?,
            audit_caller: db.open_tree("audit_caller")?,
            audit_time: db.open_tree("audit_time")?,
            db,
        };
        if store.meta_get("format")?.is_none() {
            store.meta_put("format", b"passerelle-store-1")?;
        }
        Ok(store)
    }
}

impl SledStore {
    /// The underlying database, for the registries that keep their own trees (consents).
    pub fn db(&self) -> &sled::Db {
        &self.db
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

fn keyed(prefix: &str, time_ms: u64, seq: u64) -> Vec<u8> {
    let mut k = Vec::with_capacity(prefix.len() + 17);
    k.extend_from_slice(prefix.as_bytes());
    k.push(0);
    k.extend_from_slice(&be(time_ms));
    k.extend_from_slice(&be(seq));
    k
}

impl AuditIndex for SledStore {
    fn audit_index(&self, entries: &[IndexEntry]) -> Result<(), StoreError> {
        let (mut loc, mut subj, mut caller, mut time) =
            (sled::Batch::default(), sled::Batch::default(), sled::Batch::default(), sled::Batch::default());
        let mut last = None;
        for e in entries {
            let mut v = [0u8; 16];
            v[..8].copy_from_slice(&be(e.segment));
            v[8..].copy_from_slice(&be(e.offset));
            loc.insert(&be(e.seq), &v);
            for s in &e.subjects {
                subj.insert(keyed(s, e.time_ms, e.seq), &[]);
            }
            if let Some(c) = &e.caller {
                caller.insert(keyed(c, e.time_ms, e.seq), &[]);
            }
            let mut t = [0u8; 16];
            t[..8].copy_from_slice(&be(e.time_ms));
            t[8..].copy_from_slice(&be(e.seq));
            time.insert(&t, &[]);
            last = Some(e.seq);
        }
        self.audit_loc.apply_batch(loc)?;
        self.audit_subject.apply_batch(subj)?;
        self.audit_caller.apply_batch(caller)?;
        self.audit_time.apply_batch(time)?;
        if let Some(seq) = last {
            self.meta.insert("audit_indexed_seq", &be(seq))?;
        }
        Ok(())
    }

    fn audit_indexed_seq(&self) -> Result<u64, StoreError> {
        Ok(self
            .meta
            .get("audit_indexed_seq")?
            .and_then(|v| <[u8; 8]>::try_from(v.as_ref()).ok())
            .map_or(0, u64::from_be_bytes))
    }

    fn audit_query(
        &self,
        selector: &Selector,
        from_ms: u64,
        to_ms: u64,
        limit: usize,
    ) -> Result<Vec<Location>, StoreError> {
        let (tree, lo, hi, skip) = match selector {
            Selector::Subject(k) => (&self.audit_subject, keyed(k, from_ms, 0), keyed(k, to_ms, u64::MAX), k.len() + 1),
            Selector::Caller(k) => (&self.audit_caller, keyed(k, from_ms, 0), keyed(k, to_ms, u64::MAX), k.len() + 1),
            Selector::Time => {
                let mut lo = be(from_ms).to_vec();
                lo.extend_from_slice(&be(0));
                let mut hi = be(to_ms).to_vec();
                hi.extend_from_slice(&be(u64::MAX));
                (&self.audit_time, lo, hi, 0)
            }
        };
        let mut out = Vec::new();
        for kv in tree.range(lo..=hi) {
            let (k, _) = kv?;
            let Some(seq) =
                k.get(skip + 8..skip + 16).and_then(|b| <[u8; 8]>::try_from(b).ok()).map(u64::from_be_bytes)
            else {
                continue;
            };
            if let Some(v) = self.audit_loc.get(be(seq))?
                && v.len() == 16
            {
                let segment = u64::from_be_bytes(v[..8].try_into().unwrap_or_default());
                let offset = u64::from_be_bytes(v[8..].try_into().unwrap_or_default());
                out.push(Location { seq, segment, offset });
            }
            if out.len() >= limit {
                break;
            }
        }
        Ok(out)
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
        assert_eq!(s.meta_get("format").unwrap().as_deref(), Some(&b"passerelle-store-1"[..]));
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
