//! The policy the data plane enforces: bundles loaded and compiled into a
//! [`policies::Snapshot`], held behind `arc-swap` so that a change is one atomic pointer swap
//! and a request never waits for it (it keeps the snapshot it started with).

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use anyhow::Context as _;
use arc_swap::ArcSwap;
use policies::Snapshot;
use policies::model::Policy;

use crate::config::PolicyConfig;

/// The current snapshot and its version counter.
#[derive(Debug)]
pub struct PolicyHandle {
    current: ArcSwap<Snapshot>,
    version: AtomicU64,
}

/// Expands the configured paths: files as given, directories to their `*.toml` files, sorted.
pub fn bundle_files(paths: &[PathBuf]) -> anyhow::Result<Vec<PathBuf>> {
    let mut out = Vec::new();
    for p in paths {
        if p.is_dir() {
            let mut v: Vec<PathBuf> = std::fs::read_dir(p)
                .with_context(|| format!("cannot read bundle directory {}", p.display()))?
                .filter_map(|e| e.ok().map(|e| e.path()))
                .filter(|f| f.extension().is_some_and(|x| x == "toml"))
                .collect();
            v.sort();
            out.extend(v);
        } else {
            out.push(p.clone());
        }
    }
    Ok(out)
}

/// Loads and validates bundle files into a policy.
pub fn load_policy(files: &[impl AsRef<Path>]) -> anyhow::Result<Policy> {
    policies::bundle::load_files(files).map_err(|e| anyhow::anyhow!("invalid policy bundles:\n{e}"))
}

impl PolicyHandle {
    /// Loads the configured bundles (none: an empty policy that refuses everything).
    pub fn load(cfg: &PolicyConfig) -> anyhow::Result<Self> {
        let files = bundle_files(&cfg.bundles)?;
        let policy = if files.is_empty() { Policy::default() } else { load_policy(&files)? };
        let snapshot = Snapshot::compile(&policy, 1);
        tracing::info!(files = files.len(), grants = snapshot.grant_count(), "policy loaded");
        Ok(PolicyHandle { current: ArcSwap::from_pointee(snapshot), version: AtomicU64::new(1) })
    }

    /// The snapshot in force now.
    pub fn current(&self) -> Arc<Snapshot> {
        self.current.load_full()
    }

    /// A cheap guard on the snapshot in force, for the request path.
    pub fn guard(&self) -> arc_swap::Guard<Arc<Snapshot>> {
        self.current.load()
    }

    /// Compiles `policy` and makes it the one in force; returns the new version.
    pub fn replace(&self, policy: &Policy) -> u64 {
        let version = self.version.fetch_add(1, Ordering::AcqRel) + 1;
        self.current.store(Arc::new(Snapshot::compile(policy, version)));
        version
    }
}
