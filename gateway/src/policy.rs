//! The policy the data plane enforces, and how it changes.
//!
//! The store holds the policy document (organisations, sources, services, instruments,
//! adhesions, roles, exceptional accesses) and every change that produced it, versioned. At run
//! time it is compiled into a [`policies::Snapshot`] held behind `arc-swap`: a change is one
//! atomic pointer swap and a request never waits for it (it keeps the snapshot it started with).
//!
//! Every change goes one way, [`Changes::apply`]: edit a copy, validate the whole policy as a
//! bundle is validated, commit version N+1 and its change entry to the store (durable), append
//! the change to the audit trail (durable; else the commit is undone), swap the snapshot. The
//! control plane's calls, bundle imports (at start, on SIGHUP, `passerelle policy import`) and
//! nothing else change the policy.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::time::Duration;

use anyhow::Context as _;
use arc_swap::ArcSwap;
use policies::Snapshot;
use policies::bundle::BundleErrors;
use policies::ids::Kbo;
use policies::model::Policy;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::audit::{AuditTrail, Record, RecordKind};
use crate::config::PolicyConfig;
use crate::error::Refusal;
use crate::store::{Store, StoreError};

/// The policy in force: its compiled snapshot, its document, its version, and the clock the
/// decisions read.
#[derive(Debug)]
pub struct PolicyHandle {
    current: ArcSwap<Snapshot>,
    model: ArcSwap<Policy>,
    version: AtomicU64,
    /// When the version in force was installed (Unix ms).
    installed_ms: AtomicU64,
    /// Added to the system clock; tests move time forward instead of waiting (7-day deadlines).
    clock_offset_ms: AtomicI64,
    /// Serialises installs, so that a refresh from a shared store (read, compare, install)
    /// never puts back a version older than one installed meanwhile.
    installing: std::sync::Mutex<()>,
    /// The version in force, for those that act on a change (the connections of organisations
    /// that left the policy end).
    installed: tokio::sync::watch::Sender<u64>,
    /// Run with every policy about to be installed, before its snapshot is swapped in (the
    /// registered services' routes are rebuilt there, so a call that sees the new snapshot
    /// finds their routes).
    on_install: std::sync::OnceLock<InstallHook>,
}

/// What [`PolicyHandle::on_install`] runs.
pub struct InstallHook(pub Box<dyn Fn(&Policy) + Send + Sync>);

impl std::fmt::Debug for InstallHook {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("InstallHook")
    }
}

/// A check of a whole policy: what is wrong with it, in one message.
pub type PolicyCheck = dyn Fn(&Policy) -> Result<(), String> + Send + Sync;

/// What [`Changes`] runs on a policy before committing it, besides the bundle validation.
pub struct CheckHook(pub Box<PolicyCheck>);

impl std::fmt::Debug for CheckHook {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("CheckHook")
    }
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

fn system_ms() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64)
}

impl PolicyHandle {
    /// A handle on `policy` as version `version`.
    pub fn new(policy: Policy, version: u64) -> Self {
        let snapshot = Snapshot::compile(&policy, version);
        PolicyHandle {
            current: ArcSwap::from_pointee(snapshot),
            model: ArcSwap::from_pointee(policy),
            version: AtomicU64::new(version),
            installed_ms: AtomicU64::new(system_ms()),
            clock_offset_ms: AtomicI64::new(0),
            installing: std::sync::Mutex::new(()),
            installed: tokio::sync::watch::Sender::new(version),
            on_install: std::sync::OnceLock::new(),
        }
    }

    /// Loads the configured bundles only (none: an empty policy that refuses everything).
    pub fn load(cfg: &PolicyConfig) -> anyhow::Result<Self> {
        let files = bundle_files(&cfg.bundles)?;
        let policy = if files.is_empty() { Policy::default() } else { load_policy(&files)? };
        Ok(Self::new(policy, 1))
    }

    /// The policy the store holds (version 0 and empty when it holds none yet).
    pub fn from_store(store: &dyn Store) -> anyhow::Result<Self> {
        match store.policy_current()? {
            Some((version, doc)) => {
                let policy: Policy =
                    serde_json::from_slice(&doc).context("the store's policy document is unreadable")?;
                policies::bundle::validate("store", &policy)
                    .map_err(|e| anyhow::anyhow!("the store's policy (version {version}) is invalid:\n{e}"))?;
                Ok(Self::new(policy, version))
            }
            None => Ok(Self::new(Policy::default(), 0)),
        }
    }

    /// The snapshot in force now.
    pub fn current(&self) -> Arc<Snapshot> {
        self.current.load_full()
    }

    /// A cheap guard on the snapshot in force, for the request path.
    pub fn guard(&self) -> arc_swap::Guard<Arc<Snapshot>> {
        self.current.load()
    }

    /// The policy document in force.
    pub fn model(&self) -> Arc<Policy> {
        self.model.load_full()
    }

    pub fn version(&self) -> u64 {
        self.version.load(Ordering::Acquire)
    }

    /// How long the version in force has been in force.
    pub fn age(&self) -> Duration {
        Duration::from_millis(system_ms().saturating_sub(self.installed_ms.load(Ordering::Relaxed)))
    }

    /// Makes `policy` the one in force under the next version, without the store (tests and
    /// tools that hold no store); returns the version.
    pub fn replace(&self, policy: &Policy) -> u64 {
        let version = self.version() + 1;
        self.install(policy.clone(), version);
        version
    }

    /// Installs the store's policy when its version is not the one in force: a change made
    /// through another replica of a shared store. Returns whether it installed one.
    pub fn refresh(&self, store: &dyn Store) -> anyhow::Result<bool> {
        let _one = self.installing.lock().map_err(|_| anyhow::anyhow!("policy install lock poisoned"))?;
        let Some((version, doc)) = store.policy_current()? else { return Ok(false) };
        if version == self.version() {
            return Ok(false);
        }
        let policy: Policy = serde_json::from_slice(&doc).context("the store's policy document is unreadable")?;
        policies::bundle::validate("store", &policy)
            .map_err(|e| anyhow::anyhow!("the store's policy (version {version}) is invalid:\n{e}"))?;
        self.install_unlocked(policy, version);
        Ok(true)
    }

    fn install(&self, policy: Policy, version: u64) {
        let _one = self.installing.lock();
        self.install_unlocked(policy, version);
    }

    /// Runs `hook` with every policy installed from now on (once per handle).
    pub fn on_install(&self, hook: impl Fn(&Policy) + Send + Sync + 'static) {
        let _ = self.on_install.set(InstallHook(Box::new(hook)));
    }

    fn install_unlocked(&self, policy: Policy, version: u64) {
        if let Some(h) = self.on_install.get() {
            (h.0)(&policy);
        }
        let snapshot = Snapshot::compile(&policy, version);
        tracing::info!(version, grants = snapshot.grant_count(), "policy in force");
        self.current.store(Arc::new(snapshot));
        self.model.store(Arc::new(policy));
        self.version.store(version, Ordering::Release);
        self.installed_ms.store(system_ms(), Ordering::Relaxed);
        self.installed.send_replace(version);
    }

    /// Sees each version installed from now on.
    pub fn watch(&self) -> tokio::sync::watch::Receiver<u64> {
        self.installed.subscribe()
    }

    /// The time decisions are taken at (Unix ms): the system clock plus the offset.
    pub fn now_ms(&self) -> u64 {
        self.at_ms(system_ms())
    }

    /// The time decisions are taken at when the system clock read `system_ms`.
    pub fn at_ms(&self, system_ms: u64) -> u64 {
        let off = self.clock_offset_ms.load(Ordering::Relaxed);
        system_ms.saturating_add_signed(off)
    }

    /// [`now_ms`](Self::now_ms) in seconds, as `decide()` takes it.
    pub fn now_secs(&self) -> i64 {
        (self.now_ms() / 1000) as i64
    }

    /// Moves this gateway's clock forward (tests of deadlines such as the 7-day tacit approval).
    pub fn advance_clock(&self, by: Duration) {
        self.clock_offset_ms.fetch_add(by.as_millis() as i64, Ordering::Relaxed);
    }

    /// Puts this gateway's clock back on the system clock.
    pub fn reset_clock(&self) {
        self.clock_offset_ms.store(0, Ordering::Relaxed);
    }
}

/// Refuses an import that would leave the gateway unmanageable: a policy with no organisation
/// and no instrument (an empty bundle replaces everything), without an integrator, or — for
/// an import through the control plane — without the importer's own integrator role.
pub fn import_guard(policy: &Policy, importer: Option<Kbo>) -> Result<(), String> {
    use policies::model::OrgKind;
    if policy.organisations.is_empty() && policy.instruments.is_empty() {
        return Err(
            "the bundle holds no organisation and no instrument: importing it would remove the whole policy".into()
        );
    }
    if !policy.organisations.iter().any(|o| o.kind == OrgKind::Integrator) {
        return Err("the bundle registers no integrator: nobody could manage the gateway after it".into());
    }
    if let Some(k) = importer
        && !policy.organisations.iter().any(|o| o.kbo == k && o.kind == OrgKind::Integrator)
    {
        return Err(format!("the bundle would remove the importer's own integrator role (organisation {k})"));
    }
    Ok(())
}

/// One change of the policy, as the store keeps it (`GET /changes`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Change {
    /// The policy version this change produced.
    pub version: u64,
    /// RFC 3339.
    pub time: String,
    /// Who: an enterprise number, or `operator` for imports from the configured bundles.
    pub actor: String,
    /// The call or command (`POST /instruments/{reference}/transitions`, `bundle import`).
    pub operation: String,
    /// What it is about (`instrument DIV/CONV/2025/0100`).
    pub target: String,
    /// What changed (`convention-sent → signed-by-beneficiary`).
    pub summary: String,
    pub reason: Option<String>,
    /// The sequence number of its audit record.
    pub audit_seq: Option<u64>,
}

/// Who changes the policy.
#[derive(Debug, Clone)]
pub struct Actor {
    pub kbo: Option<Kbo>,
    pub fingerprint: Option<String>,
}

impl Actor {
    pub const OPERATOR: Actor = Actor { kbo: None, fingerprint: None };

    fn label(&self) -> String {
        match self.kbo {
            Some(k) => {
                let mut d = [0u8; 10];
                k.digits(&mut d).to_owned()
            }
            None => "operator".to_owned(),
        }
    }
}

/// What an edit did, for the change entry and the audit record.
#[derive(Debug, Clone, Default)]
pub struct Edit {
    pub target: String,
    pub summary: String,
    pub reason: Option<String>,
    /// The instrument concerned, recorded as the audit record's legal basis.
    pub instrument: Option<String>,
}

#[derive(Debug, thiserror::Error)]
pub enum ChangeError {
    /// The edit itself refused (unknown resource, illegal transition, no right …).
    #[error("{0}")]
    Refused(Refusal),
    /// The edited policy does not validate.
    #[error("{0}")]
    Invalid(BundleErrors),
    #[error("store: {0}")]
    Store(#[from] StoreError),
    /// The change could not be recorded in the audit trail, so it was undone.
    #[error("the audit trail could not record the change; it was undone")]
    Audit,
    #[error("internal: {0}")]
    Internal(String),
}

impl From<Refusal> for ChangeError {
    fn from(r: Refusal) -> Self {
        ChangeError::Refused(r)
    }
}

/// The one writer of the policy: serialises changes and applies each everywhere.
#[derive(Debug)]
pub struct Changes {
    pub handle: Arc<PolicyHandle>,
    store: Arc<dyn Store>,
    audit: Arc<AuditTrail>,
    lock: tokio::sync::Mutex<()>,
    check: std::sync::OnceLock<CheckHook>,
}

const BUNDLES_DIGEST: &str = "policy.bundles_sha256";

/// Configured bundles that changed since the last import, parsed and validated.
#[derive(Debug)]
pub struct NewBundles {
    policy: Policy,
    /// SHA-256 over the files' names and texts, kept in the store after the import.
    digest: String,
    files: usize,
}

impl Changes {
    pub fn new(handle: Arc<PolicyHandle>, store: Arc<dyn Store>, audit: Arc<AuditTrail>) -> Self {
        Changes { handle, store, audit, lock: tokio::sync::Mutex::new(()), check: std::sync::OnceLock::new() }
    }

    /// Runs `check` on every policy before it is committed (once per writer): what bundle
    /// validation cannot see, such as registered layouts compiling and upstreams resolving.
    pub fn on_check(&self, check: impl Fn(&Policy) -> Result<(), String> + Send + Sync + 'static) {
        let _ = self.check.set(CheckHook(Box::new(check)));
    }

    /// Applies `edit` to a copy of the policy in force, validates, commits, records, swaps.
    pub async fn apply<F>(&self, actor: &Actor, operation: &str, edit: F) -> Result<(Change, Arc<Policy>), ChangeError>
    where
        F: FnOnce(&mut Policy, u64) -> Result<Edit, Refusal>,
    {
        let _one_at_a_time = self.lock.lock().await;
        let old = self.handle.model();
        let old_version = self.handle.version();
        let mut new = (*old).clone();
        let now = self.handle.now_ms();
        let e = edit(&mut new, now)?;
        policies::bundle::validate("policy", &new).map_err(ChangeError::Invalid)?;
        if let Some(check) = self.check.get() {
            (check.0)(&new).map_err(|message| {
                ChangeError::Invalid(BundleErrors(vec![policies::bundle::BundleError {
                    file: "policy".into(),
                    key: "registration".into(),
                    message,
                }]))
            })?;
        }
        let version = old_version + 1;
        let time = time::OffsetDateTime::from_unix_timestamp_nanos(i128::from(now) * 1_000_000)
            .ok()
            .and_then(|t| t.format(&time::format_description::well_known::Rfc3339).ok())
            .unwrap_or_default();
        let mut change = Change {
            version,
            time,
            actor: actor.label(),
            operation: operation.to_owned(),
            target: e.target.clone(),
            summary: e.summary.clone(),
            reason: e.reason.clone(),
            audit_seq: None,
        };
        let doc = Arc::new(serde_json::to_vec(&new).map_err(|e| ChangeError::Internal(e.to_string()))?);
        let entry = serde_json::to_vec(&change).map_err(|e| ChangeError::Internal(e.to_string()))?;
        let (store, d) = (self.store.clone(), doc.clone());
        let committed = tokio::task::spawn_blocking(move || store.policy_commit(version, &d, &entry))
            .await
            .map_err(|e| ChangeError::Internal(e.to_string()))?;
        if let Err(e) = committed {
            if matches!(e, StoreError::Conflict(_)) {
                // Another replica of the shared store committed first: take its version, so
                // that the caller's retry edits the policy now in force.
                let (store, handle) = (self.store.clone(), self.handle.clone());
                let refreshed = tokio::task::spawn_blocking(move || handle.refresh(store.as_ref())).await;
                if !matches!(refreshed, Ok(Ok(_))) {
                    tracing::warn!("could not re-read the policy after a concurrent change");
                }
            }
            return Err(e.into());
        }
        let mut record = Record::control(
            RecordKind::PolicyChange,
            system_ms(),
            format!("policy-v{version}"),
            actor.kbo.map(|_| actor.label()),
            actor.fingerprint.clone(),
            operation,
        );
        record.legal_basis = e.instrument.clone();
        record.justification = Some(format!(
            "policy v{version}: {}: {}{}",
            e.target,
            e.summary,
            e.reason.as_deref().map(|r| format!(" (reason: {r})")).unwrap_or_default()
        ));
        match self.audit.append(&record).await {
            Ok(seq) => {
                // The change entry learns its record's number (the commit above is what counts;
                // should this rewrite fail, the entry merely lacks the number).
                change.audit_seq = Some(seq);
                let entry = serde_json::to_vec(&change).map_err(|e| ChangeError::Internal(e.to_string()))?;
                let store = self.store.clone();
                let written = tokio::task::spawn_blocking(move || store.policy_commit(version, &doc, &entry)).await;
                if !matches!(written, Ok(Ok(()))) {
                    tracing::warn!(version, "the change entry could not be given its audit sequence number");
                }
            }
            Err(err) => {
                tracing::error!(error = %err, version, "policy change not recorded in the audit trail; undoing it");
                let store = self.store.clone();
                let previous = if old_version == 0 {
                    None
                } else {
                    Some((old_version, serde_json::to_vec(&*old).map_err(|e| ChangeError::Internal(e.to_string()))?))
                };
                tokio::task::spawn_blocking(move || {
                    store.policy_revert(version, previous.as_ref().map(|(v, d)| (*v, d.as_slice())))
                })
                .await
                .map_err(|e| ChangeError::Internal(e.to_string()))??;
                return Err(ChangeError::Audit);
            }
        }
        self.handle.install(new, version);
        tracing::info!(version, operation, "policy changed");
        Ok((change, self.handle.model()))
    }

    /// Replaces the whole policy by `policy` (a bundle import).
    pub async fn import(
        &self,
        actor: &Actor,
        operation: &str,
        policy: Policy,
        what: String,
    ) -> Result<Change, ChangeError> {
        self.apply(actor, operation, move |p, _| {
            *p = policy;
            Ok(Edit { target: "policy".to_owned(), summary: what, reason: None, instrument: None })
        })
        .await
        .map(|(c, _)| c)
    }

    /// Imports the configured bundles when they changed since the last import (or the store
    /// holds no policy yet); otherwise the store's policy, with its API changes, stays in force.
    /// Returns the new version when it imported.
    pub async fn sync_bundles(&self, cfg: &PolicyConfig) -> anyhow::Result<Option<u64>> {
        match self.read_bundles(cfg).await? {
            Some(bundles) => self.import_bundles(bundles).await.map(Some),
            None => Ok(None),
        }
    }

    /// Reads the configured bundles; when they changed since the last import (or the store
    /// holds no policy yet), parses and validates them, ready for [`import_bundles`](Self::import_bundles).
    pub async fn read_bundles(&self, cfg: &PolicyConfig) -> anyhow::Result<Option<NewBundles>> {
        let files = bundle_files(&cfg.bundles)?;
        let mut texts = Vec::with_capacity(files.len());
        let mut digest = Sha256::new();
        for f in &files {
            let t = std::fs::read_to_string(f).with_context(|| format!("cannot read bundle {}", f.display()))?;
            digest.update(f.display().to_string().as_bytes());
            digest.update([0]);
            digest.update(t.as_bytes());
            digest.update([0]);
            texts.push((f.display().to_string(), t));
        }
        let digest = format!("{:x}", digest.finalize());
        let store = self.store.clone();
        let last = tokio::task::spawn_blocking(move || store.meta_get(BUNDLES_DIGEST)).await??;
        if self.handle.version() > 0 && last.as_deref() == Some(digest.as_bytes()) {
            return Ok(None);
        }
        if files.is_empty() && self.handle.version() > 0 {
            return Ok(None); // nothing configured: the store's policy stays
        }
        let policy = policies::bundle::load_texts(texts.iter().map(|(n, t)| (n.as_str(), t.as_str())))
            .map_err(|e| anyhow::anyhow!("invalid policy bundles:\n{e}"))?;
        Ok(Some(NewBundles { policy, digest, files: files.len() }))
    }

    /// Imports bundles [`read_bundles`](Self::read_bundles) found changed; returns the version.
    pub async fn import_bundles(&self, bundles: NewBundles) -> anyhow::Result<u64> {
        let NewBundles { policy, digest, files } = bundles;
        let change = self
            .import(&Actor::OPERATOR, "bundle import", policy, format!("imported {files} bundle file(s)"))
            .await
            .map_err(|e| anyhow::anyhow!("bundle import: {e}"))?;
        let store = self.store.clone();
        tokio::task::spawn_blocking(move || store.meta_put(BUNDLES_DIGEST, digest.as_bytes())).await??;
        Ok(change.version)
    }

    /// The recorded changes after version `after`.
    pub async fn history(&self, after: u64, limit: usize) -> Result<Vec<Change>, ChangeError> {
        let store = self.store.clone();
        let raw = tokio::task::spawn_blocking(move || store.policy_changes(after, limit))
            .await
            .map_err(|e| ChangeError::Internal(e.to_string()))??;
        raw.iter().map(|r| serde_json::from_slice(r).map_err(|e| ChangeError::Internal(e.to_string()))).collect()
    }
}
