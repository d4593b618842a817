//! Persistence behind the [`Store`] trait; [`sled`](SledStore) is the embedded default.
//!
//! The trait grows with the issues that need it (instruments, consents, roles, audit indexes
//! and checkpoints); today it holds the gateway's metadata. Every write is durable when it
//! returns.

use std::path::Path;

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
pub trait Store: Send + Sync + std::fmt::Debug {
    /// `sled` or `postgres`.
    fn kind(&self) -> &'static str;
    fn meta_get(&self, key: &str) -> Result<Option<Vec<u8>>, StoreError>;
    /// Writes `value` under `key`; durable when it returns.
    fn meta_put(&self, key: &str, value: &[u8]) -> Result<(), StoreError>;
}

/// The embedded store: one directory, nothing to install.
#[derive(Debug)]
pub struct SledStore {
    db: sled::Db,
    meta: sled::Tree,
}

impl SledStore {
    pub fn open(path: &Path) -> Result<Self, StoreError> {
        let db = sled::Config::new()
            .path(path)
            .mode(sled::Mode::HighThroughput)
            .open()
            .map_err(|source| StoreError::Open { path: path.display().to_string(), source })?;
        let meta = db.open_tree("meta")?;
        let store = SledStore { db, meta };
        if store.meta_get("format")?.is_none() {
            store.meta_put("format", b"passerelle-store-1")?;
        }
        Ok(store)
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
}
