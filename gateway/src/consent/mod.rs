//! The consent registry (DOMAIN.md §3): who consented that which recipient obtains which data
//! for which purpose, until when — checked at request time, revocable at once, never lost.
//!
//! Records follow the shape of ISO/IEC TS 27560 / Kantara consent receipts: who (subject), to
//! whom (recipient), what (service), why (purpose), since and until when, how given, evidence.
//!
//! Two copies, kept in step:
//! * the store (the embedded store's consent log, [`log`], or the shared store's tables), the
//!   source of truth, with every consent's history; a change is durable (synced) before it is
//!   acknowledged, and a revoked consent is marked, not deleted;
//! * an in-memory index for the data plane, sharded by data subject. A change takes its shard's
//!   write lock, makes the store durable, updates the index, and only then releases the lock
//!   and acknowledges: a reader never sees the index disagree with the store, and after the
//!   acknowledgement the very next request sees the change. At start the index is rebuilt
//!   from the store, so a crash loses nothing acknowledged.
//!
//! [`Registry::check`] allocates nothing and never touches the disk.

mod image;
pub mod log;
mod table;

/// The index image's file name in the embedded store's directory.
pub const IMAGE_FILE: &str = "consent-index.img";
/// The consent log's file name in the embedded store's directory.
pub const LOG_FILE: &str = "consents.log";

use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};

use arc_swap::ArcSwap;

use policies::ids::{Kbo, Niss};
use policies::model::OrgKind;
use rustc_hash::FxHashMap;
use serde::{Deserialize, Serialize};

use crate::store::StoreError;

const SHARDS: usize = 256;
const DAY_MS: u64 = 86_400_000;

/// To whom a consent is given.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Recipient {
    /// One organisation, by enterprise number (10 digits).
    Org(String),
    /// Every organisation of a kind (where the instrument grants to a sector).
    Kind(OrgKind),
}

/// How the consent was given.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Channel {
    /// By the citizen, through a citizen access point (its enterprise number).
    CitizenAccessPoint(String),
    /// Through an instance (its enterprise number), e.g. at a counter.
    Instance(String),
}

/// A consent record.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Consent {
    /// `c-` and 32 hex digits.
    pub id: String,
    /// The data subject's NISS or BIS number (11 digits).
    pub subject: String,
    pub recipient: Recipient,
    /// The service (data category) consented to, e.g. `sigedis.pensions`.
    pub service: String,
    pub purpose: String,
    /// The public services a value may be used for (art. 5/4, 7/3); empty: the recipient only.
    pub scope: Vec<String>,
    pub given_at_ms: u64,
    pub valid_until_ms: u64,
    pub revoked_at_ms: Option<u64>,
    pub given_via: Channel,
    /// Reference of the evidence (the signed form, the portal session, …).
    pub evidence: String,
    /// When the citizen last re-validated it (invited at least once a year).
    pub last_validated_ms: u64,
}

/// What the check found when no consent permits the call.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Denial {
    Missing,
    Revoked,
    Expired,
    /// The source stops using a consent the citizen has not re-validated in time.
    RevalidationDue,
}

/// A consent id as stored in the index.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct ConsentId(pub u128);

impl ConsentId {
    pub fn to_text(self) -> String {
        format!("c-{:032x}", self.0)
    }

    /// [`ConsentId::to_text`] in `buf`, without allocating.
    pub fn text(self, buf: &mut [u8; 34]) -> &str {
        buf[..2].copy_from_slice(b"c-");
        certs::hex_into(&self.0.to_be_bytes(), &mut buf[2..]);
        // INVARIANT: every byte is ASCII.
        std::str::from_utf8(buf).unwrap_or_default()
    }

    pub fn parse(s: &str) -> Option<Self> {
        let hex = s.strip_prefix("c-")?;
        (hex.len() == 32).then(|| u128::from_str_radix(hex, 16).ok()).flatten().map(ConsentId)
    }

    /// The id as two words, high first (a `u128` field would align its holder to 16 bytes).
    pub(crate) fn halves(self) -> [u64; 2] {
        [(self.0 >> 64) as u64, self.0 as u64]
    }

    pub(crate) fn from_halves(h: [u64; 2]) -> Self {
        ConsentId(u128::from(h[0]) << 64 | u128::from(h[1]))
    }
}

/// A consent as the index keeps it, before it is packed into its [`Cell`].
#[derive(Debug, Clone, Copy)]
struct Entry {
    service: u32,
    purpose: u32,
    valid_until_ms: u64,
    /// The consent id as two halves: a `u128` field would align the entry to 16 bytes.
    id: [u64; 2],
    /// The day (since 1970-01-01) the citizen last validated it.
    validated_day: u32,
    revoked: bool,
}

/// Recipient key in the index: an enterprise number, or a kind (high bit set).
fn recipient_key(r: &Recipient) -> Option<u64> {
    match r {
        Recipient::Org(k) => Kbo::parse(k).ok().map(Kbo::as_u64),
        Recipient::Kind(kind) => Some((1 << 63) | *kind as u64),
    }
}

fn kind_key(kind: OrgKind) -> u64 {
    (1 << 63) | kind as u64
}

/// A recipient key in 32 bits: an enterprise number is below 2 × 10⁹ (its first digit is 0
/// or 1), so below 2³¹; a kind sets the high bit.
fn pack_recipient(key: u64) -> u32 {
    if key >> 63 == 1 { 0x8000_0000 | (key as u32 & 0x7fff_ffff) } else { key as u32 & 0x7fff_ffff }
}

const SUBJECT_BITS: u32 = 40;
const REVOKED_BIT: u64 = 1 << 63;

/// One consent in the index, with its key, in 40 bytes: the id, the subject (NISS, 37 bits)
/// with the day of the last validation (16 bits, to 2149) and the revoked flag in one word, the
/// end of validity (ms), the recipient (32 bits), service and purpose (interned, 16 bits). A
/// (subject, recipient) with several consents has several cells, side by side in the table; a
/// hit reads one or two adjacent cache lines and follows no pointer. (64-byte slots holding a
/// first consent inline took 107 bytes a consent at ten million; these cells in hashbrown's
/// table 69, in [`table::Table`] 55.)
#[derive(Debug, Clone, Copy, PartialEq, Eq, bytemuck::Pod, bytemuck::Zeroable)]
#[repr(C)]
struct Cell {
    id: [u64; 2],
    subject_day: u64,
    valid_until_ms: u64,
    recipient: u32,
    service: u16,
    purpose: u16,
}

const _: () = assert!(std::mem::size_of::<Cell>() == 40);

impl Cell {
    /// A free slot of a [`table::Table`]: its subject is 0, which no NISS is.
    const FREE: Cell = Cell { id: [0; 2], subject_day: 0, valid_until_ms: 0, recipient: 0, service: 0, purpose: 0 };

    fn is_free(&self) -> bool {
        self.subject() == 0
    }

    fn new(subject: u64, recipient: u64, e: &Entry) -> Cell {
        let day = u64::from(e.validated_day.min(u32::from(u16::MAX)));
        Cell {
            id: e.id,
            subject_day: (subject & ((1 << SUBJECT_BITS) - 1))
                | day << SUBJECT_BITS
                | if e.revoked { REVOKED_BIT } else { 0 },
            valid_until_ms: e.valid_until_ms,
            recipient: pack_recipient(recipient),
            service: u16::try_from(e.service).unwrap_or(u16::MAX),
            purpose: u16::try_from(e.purpose).unwrap_or(u16::MAX),
        }
    }

    fn subject(&self) -> u64 {
        self.subject_day & ((1 << SUBJECT_BITS) - 1)
    }

    fn validated_day(&self) -> u64 {
        (self.subject_day >> SUBJECT_BITS) & 0xffff
    }

    fn revoked(&self) -> bool {
        self.subject_day & REVOKED_BIT != 0
    }

    fn id(&self) -> ConsentId {
        ConsentId::from_halves(self.id)
    }

    fn hash(&self) -> u64 {
        cell_hash(self.subject(), self.recipient)
    }
}

/// One shard of the index: cells in an open-addressing table ([`table::Table`]), several per
/// key where a person gave a recipient several consents.
#[derive(Debug, Default)]
struct Shard {
    table: table::Table,
}

fn cell_hash(subject: u64, recipient: u32) -> u64 {
    use std::hash::BuildHasher as _;
    rustc_hash::FxBuildHasher.hash_one((subject, recipient))
}

impl Shard {
    /// The consents of `subject` for `recipient` (a key as [`recipient_key`] makes it).
    fn cells(&self, subject: u64, recipient: u64) -> impl Iterator<Item = &Cell> {
        let recipient = pack_recipient(recipient);
        self.table
            .iter_hash(cell_hash(subject, recipient))
            .filter(move |c| c.recipient == recipient && c.subject() == subject)
    }

    fn upsert(&mut self, subject: u64, recipient: u64, e: Entry) {
        let cell = Cell::new(subject, recipient, &e);
        let hash = cell.hash();
        match self.table.find_mut(hash, |c| c.id == cell.id && c.recipient == cell.recipient && c.subject() == subject)
        {
            Some(c) => *c = cell,
            None => self.table.insert(cell),
        }
    }

    /// Puts a cell read from an image (no two of them are the same consent).
    fn insert(&mut self, cell: Cell) {
        self.table.insert(cell);
    }

    fn reserve(&mut self, more: usize) {
        self.table.reserve(more);
    }

    /// How many consents.
    fn len(&self) -> usize {
        self.table.len()
    }
}

/// Interned service and purpose names (a small, slowly growing set): read through `arc-swap`
/// on the request path, replaced whole (copy, add, swap) on the rare write.
#[derive(Debug, Default, Clone)]
struct Names {
    ids: FxHashMap<Box<str>, u32>,
}

impl Names {
    fn get(&self, s: &str) -> Option<u32> {
        self.ids.get(s).copied()
    }
}

/// The consent registry: the durable store and the in-memory index.
#[derive(Debug)]
pub struct Registry {
    shards: Box<[RwLock<Shard>]>,
    names: ArcSwap<Names>,
    /// Serialises the rare additions to `names`.
    names_write: std::sync::Mutex<()>,
    store: ConsentStore,
    /// Where the index's image is written at a clean stop (embedded store only).
    image: Option<PathBuf>,
    /// Whether the index was read from its image at start (rather than rebuilt).
    from_image: bool,
    /// Held (shared) by every change for its whole length, and exclusively while the image is
    /// written: the image and the log's length it names describe the same moment.
    changing: RwLock<()>,
}

/// The consents' persistence: the consent log in the embedded store, or tables in the shared
/// PostgreSQL store (where a change also notifies every replica).
#[derive(Debug, Clone)]
pub enum ConsentStore {
    Log(Arc<log::ConsentLog>),
    Postgres(Arc<crate::store::postgres::PgStore>),
}

/// A consent of the kind a bulk import holds — supplementary pensions for `recipient`, given
/// through the citizen access point, valid to 2030 — numbered `n`: benches and measurement
/// tools build their populations with it.
pub fn sample(n: u128, subject: &str, recipient: &str) -> Consent {
    Consent {
        id: ConsentId(n).to_text(),
        subject: subject.to_owned(),
        recipient: Recipient::Org(recipient.into()),
        service: "sigedis.pensions".into(),
        purpose: "SUPPLEMENTARY_PENSION_INFO".into(),
        scope: vec![],
        given_at_ms: 1_700_000_000_000,
        valid_until_ms: 1_900_000_000_000,
        revoked_at_ms: None,
        given_via: Channel::CitizenAccessPoint("0316222275".into()),
        evidence: "bench".into(),
        last_validated_ms: 1_700_000_000_000,
    }
}

/// The event stored beside each consent change.
fn event_json(c: &Consent, event: &str, at_ms: u64, actor: &str) -> serde_json::Value {
    serde_json::json!({ "event": event, "consent": c.id, "at_ms": at_ms, "actor": actor })
}

impl ConsentStore {
    /// The consents of the embedded store: its consent log, made from the sled trees that held
    /// them before (a store written by an earlier version) the first time.
    pub fn open(store: &crate::store::SledStore) -> Result<Self, StoreError> {
        let path = store.dir().join(LOG_FILE);
        if !path.exists() {
            migrate(store.db(), &path)?;
        }
        let (log, recovery) = log::ConsentLog::open(&path)?;
        // Once the log exists it is the consents' only store. Trees left by a migration that
        // stopped after its rename hold nothing the log lacks and are dropped; a consent in
        // them that the log lacks (an earlier version run on this store again) is refused,
        // never dropped.
        if has_tree(store.db(), SLED_TREES[0]) {
            for kv in store.db().open_tree(SLED_TREES[0])?.iter() {
                let (_, v) = kv?;
                let id = serde_json::from_slice::<Consent>(&v).map(|c| c.id).unwrap_or_default();
                if !log.contains(&id) {
                    return Err(StoreError::ConsentLog(format!(
                        "{}: the store's sled trees hold consent {id}, which the log lacks (was an \
                         earlier version run on this store?); move the log aside to migrate again",
                        path.display()
                    )));
                }
            }
        }
        for tree in SLED_TREES {
            if has_tree(store.db(), tree) {
                store.db().drop_tree(tree)?;
            }
        }
        tracing::info!(
            consents = recovery.consents,
            records = recovery.records,
            torn_bytes = recovery.torn_bytes,
            "consent log open"
        );
        Ok(ConsentStore::Log(Arc::new(log)))
    }

    /// Writes `c` and an event, and makes both durable.
    fn put(&self, c: &Consent, event: &str, at_ms: u64, actor: &str) -> Result<(), StoreError> {
        match self {
            ConsentStore::Log(l) => l.append(&[log::Change { consent: c, event, at_ms, actor }]),
            ConsentStore::Postgres(p) => {
                p.consent_put(std::slice::from_ref(c), &[event_json(c, event, at_ms, actor).to_string()])
            }
        }
    }

    /// Writes the consents among `consents` whose id the store does not hold yet, each with
    /// its event (at its `given_at_ms`), durable — all of them or none — when it returns; an
    /// import never writes over a consent that exists (it may have been revoked since).
    /// Returns the consents written: their indices, and on the log the offsets of their records.
    fn put_new(&self, consents: &[Consent], event: &str, actor: &str) -> Result<Vec<(usize, u64)>, StoreError> {
        match self {
            ConsentStore::Log(l) => {
                let changes: Vec<log::Change<'_>> =
                    consents.iter().map(|c| log::Change { consent: c, event, at_ms: c.given_at_ms, actor }).collect();
                l.append_new(&changes)
            }
            ConsentStore::Postgres(p) => {
                let events: Vec<String> =
                    consents.iter().map(|c| event_json(c, event, c.given_at_ms, actor).to_string()).collect();
                Ok(p.consent_put_new(consents, &events)?.into_iter().map(|i| (i, 0)).collect())
            }
        }
    }

    pub fn get(&self, id: &str) -> Result<Option<Consent>, StoreError> {
        match self {
            ConsentStore::Log(l) => l.get(id),
            ConsentStore::Postgres(p) => p.consent_get(id),
        }
    }

    /// The history of one consent: given, revalidated, revoked, with times and actors.
    pub fn history(&self, id: &str) -> Result<Vec<serde_json::Value>, StoreError> {
        match self {
            ConsentStore::Log(l) => l.history(id),
            ConsentStore::Postgres(p) => p.consent_history(id),
        }
    }

    /// Calls `f` with every consent (the embedded store streams them; a million need not be
    /// held at once); returns how many calls were made.
    pub fn each(&self, mut f: impl FnMut(&Consent)) -> Result<usize, StoreError> {
        match self {
            ConsentStore::Log(l) => l.each(f),
            ConsentStore::Postgres(p) => {
                let all = p.consent_all()?;
                all.iter().for_each(&mut f);
                Ok(all.len())
            }
        }
    }
}

/// A consent read from the sled trees, with its events (time, event, actor).
type Migrated = (Consent, Vec<(u64, String, String)>);

/// The sled trees that held consents before the consent log.
const SLED_TREES: [&str; 3] = ["consents", "consent_ids", "consent_events"];

/// Whether sled has a tree of this name (opening one would create it).
fn has_tree(db: &sled::Db, name: &str) -> bool {
    db.tree_names().iter().any(|t| t.as_ref() == name.as_bytes())
}

/// Copies the consents and their histories from the sled trees of an earlier version into a
/// new consent log at `path`: written beside it, synced, then renamed into place, so a stop
/// halfway leaves no log and the next start migrates again.
fn migrate(db: &sled::Db, path: &Path) -> Result<(), StoreError> {
    if !has_tree(db, SLED_TREES[0]) {
        return Ok(());
    }
    let consents = db.open_tree(SLED_TREES[0])?;
    if consents.is_empty() {
        return Ok(());
    }
    let tmp = path.with_extension("migrating");
    let _ = std::fs::remove_file(&tmp);
    let started = std::time::Instant::now();
    let mut events: FxHashMap<String, Vec<(u64, String, String)>> = FxHashMap::default();
    for kv in db.open_tree(SLED_TREES[2])?.iter() {
        let (_, v) = kv?;
        let Ok(e) = serde_json::from_slice::<serde_json::Value>(&v) else { continue };
        let (Some(id), Some(event), Some(at)) = (e["consent"].as_str(), e["event"].as_str(), e["at_ms"].as_u64())
        else {
            continue;
        };
        let actor = e["actor"].as_str().unwrap_or_default().to_owned();
        events.entry(id.to_owned()).or_default().push((at, event.to_owned(), actor));
    }
    let (log, _) = log::ConsentLog::open(&tmp)?;
    let mut n = 0usize;
    let mut batch: Vec<Migrated> = Vec::new();
    let flush = |batch: &mut Vec<Migrated>| -> Result<(), StoreError> {
        let changes: Vec<log::Change<'_>> = batch
            .iter()
            .flat_map(|(c, evs)| {
                evs.iter().map(move |(at, event, actor)| log::Change { consent: c, event, at_ms: *at, actor })
            })
            .collect();
        log.append(&changes)?;
        batch.clear();
        Ok(())
    };
    for kv in consents.iter() {
        let (_, v) = kv?;
        let Ok(c) = serde_json::from_slice::<Consent>(&v) else { continue };
        let mut evs = events.remove(&c.id).unwrap_or_default();
        evs.sort_by_key(|e| e.0);
        if evs.is_empty() {
            evs.push((c.given_at_ms, "given".into(), String::new()));
        }
        batch.push((c, evs));
        n += 1;
        if batch.len() == 10_000 {
            flush(&mut batch)?;
        }
    }
    flush(&mut batch)?;
    drop(log);
    let io = |e: std::io::Error| StoreError::ConsentLog(format!("{}: {e}", path.display()));
    std::fs::rename(&tmp, path).map_err(io)?;
    if let Some(dir) = path.parent() {
        std::fs::File::open(dir).and_then(|d| d.sync_all()).map_err(io)?;
    }
    tracing::info!(
        consents = n,
        ms = started.elapsed().as_millis() as u64,
        "consents moved from sled to the consent log"
    );
    Ok(())
}

/// The cells to make room for in each shard before `consents` are put in: a shard's share and
/// a margin (a shard holds about `consents / SHARDS`, give or take its square root: at ten
/// million the margin is six times that), so that no large table grows on the way.
fn room_per_shard(consents: usize) -> usize {
    let per_shard = consents / SHARDS;
    per_shard + per_shard / 32 + 16
}

fn shard_of(niss: u64) -> usize {
    // Fibonacci hashing spreads sequential numbers over the shards.
    (niss.wrapping_mul(0x9E37_79B9_7F4A_7C15) >> 56) as usize % SHARDS
}

/// Why a change was refused.
#[derive(Debug, thiserror::Error)]
pub enum ChangeError {
    #[error("no consent with this id")]
    NotFound,
    #[error("the consent is already revoked")]
    AlreadyRevoked,
    #[error("{0}")]
    Invalid(String),
    #[error("the consent store cannot be written: {0}")]
    Store(#[from] StoreError),
}

impl Registry {
    /// Opens the registry on `store` and builds the index from it.
    pub fn open(store: ConsentStore) -> Result<Self, StoreError> {
        Self::open_with_image(store, None)
    }

    /// Opens the registry on `store`; with `image` (the embedded store), reads the index from
    /// the image a clean stop left there if it was made from the log as it is now (the same
    /// log, the same length: nothing changed since), and otherwise builds it from the store.
    pub fn open_with_image(store: ConsentStore, image: Option<PathBuf>) -> Result<Self, StoreError> {
        let mut r = Registry {
            shards: (0..SHARDS).map(|_| RwLock::new(Shard::default())).collect(),
            names: ArcSwap::from_pointee(Names::default()),
            names_write: std::sync::Mutex::new(()),
            store,
            image,
            from_image: false,
            changing: RwLock::new(()),
        };
        if let (ConsentStore::Log(log), Some(path)) = (&r.store, &r.image)
            && path.exists()
        {
            let started = std::time::Instant::now();
            match image::read(path, log.state()) {
                Ok(Some((names, shards))) => {
                    r.names = ArcSwap::from_pointee(names);
                    r.shards = shards.into_iter().map(RwLock::new).collect();
                    r.from_image = true;
                    tracing::info!(
                        consents = r.len(),
                        ms = started.elapsed().as_millis() as u64,
                        "consent index read from its image"
                    );
                    return Ok(r);
                }
                Ok(None) => tracing::info!("the consent index image predates the log's last change; rebuilding"),
                Err(e) => tracing::warn!(error = %e, "consent index image unreadable; rebuilding the index"),
            }
        }
        let n = r.reload()?;
        tracing::info!(consents = n, "consent index built");
        Ok(r)
    }

    /// Whether the index was read from its image at start.
    pub fn from_image(&self) -> bool {
        self.from_image
    }

    /// Writes the index's image, naming the log and its length, for the next start; at a
    /// clean stop. No change is in flight while it is written. Returns the consents written,
    /// or `None` without an image path or a log for it.
    pub fn save_image(&self) -> Result<Option<usize>, StoreError> {
        let (ConsentStore::Log(log), Some(path)) = (&self.store, &self.image) else { return Ok(None) };
        let _quiet = self.changing.write().unwrap_or_else(|p| p.into_inner());
        let guards: Vec<_> = self.shards.iter().map(|sh| sh.read().unwrap_or_else(|p| p.into_inner())).collect();
        let shards: Vec<&Shard> = guards.iter().map(|g| &**g).collect();
        let names = self.names.load();
        image::write(path, log.state(), &names, &shards).map_err(StoreError::Image)?;
        Ok(Some(shards.iter().map(|sh| sh.len()).sum()))
    }

    /// Held for the length of a change (see `changing`).
    fn change(&self) -> Result<std::sync::RwLockReadGuard<'_, ()>, ChangeError> {
        self.changing.read().map_err(|_| ChangeError::Invalid("index poisoned".into()))
    }

    /// Every consent of a subject, with revoked ones, oldest first. On the consent log, the
    /// subject's consents are found in the index (one shard's cells) and read from the log.
    pub fn of_subject(&self, subject: &str) -> Result<Vec<Consent>, StoreError> {
        let mut v = match &self.store {
            ConsentStore::Postgres(p) => p.consent_of_subject(subject)?,
            ConsentStore::Log(log) => {
                let Ok(niss) = Niss::parse(subject) else { return Ok(Vec::new()) };
                let ids: Vec<ConsentId> = match self.shards[shard_of(niss.as_u64())].read() {
                    Ok(shard) => shard.table.iter().filter(|c| c.subject() == niss.as_u64()).map(Cell::id).collect(),
                    Err(_) => Vec::new(),
                };
                let mut v = Vec::with_capacity(ids.len());
                for id in ids {
                    v.extend(log.get(&id.to_text())?);
                }
                v
            }
        };
        v.sort_by_key(|c: &Consent| c.given_at_ms);
        Ok(v)
    }

    /// Reads every consent from the store into the index (at start, and when a replica of a
    /// shared store has missed notifications). Consents are never deleted, only marked, so
    /// indexing them all again brings the index up to date. Returns how many were read.
    pub fn reload(&self) -> Result<usize, StoreError> {
        if let ConsentStore::Log(log) = &self.store {
            return self.reload_log(log);
        }
        self.store.each(|c| {
            if let Ok(mut shard) = self.shard_for(&c.subject).write() {
                self.index_into(&mut shard, c);
            }
        })
    }

    /// The index built from the consent log: every record in the order written (a later state
    /// replaces an earlier one), each decoded only as far as the index needs, names mapped
    /// from the log's numbers to the index's once, the shards sized for the log's consents
    /// first so that no table grows on the way. Returns the consents indexed.
    fn reload_log(&self, log: &log::ConsentLog) -> Result<usize, StoreError> {
        let room = room_per_shard(log.consents());
        for shard in self.shards.iter() {
            if let Ok(mut s) = shard.write() {
                s.reserve(room);
            }
        }
        // The log's name number → the index's (None: not mapped yet), and kinds by name.
        let mut names: Vec<Option<u32>> = Vec::new();
        let mut kinds: FxHashMap<u32, Option<OrgKind>> = FxHashMap::default();
        let intern = |id: u32, names: &mut Vec<Option<u32>>| -> u32 {
            let i = id as usize;
            if names.len() <= i {
                names.resize(i + 1, None);
            }
            *names[i].get_or_insert_with(|| log.name(id).map_or(u32::MAX, |n| self.intern(&n)))
        };
        log.scan(|r| {
            let recipient = match r.recipient {
                Ok(Some(kbo)) => kbo,
                Ok(None) => return,
                Err(kind) => {
                    let k = kinds.entry(kind).or_insert_with(|| {
                        log.name(kind).and_then(|n| serde_json::from_value(serde_json::Value::String(n)).ok())
                    });
                    match k {
                        Some(k) => kind_key(*k),
                        None => return,
                    }
                }
            };
            let Some(subject) = r.subject else { return };
            let entry = Entry {
                service: intern(r.service, &mut names),
                purpose: intern(r.purpose, &mut names),
                valid_until_ms: r.valid_until_ms,
                revoked: r.revoked,
                id: ConsentId(r.id).halves(),
                validated_day: (r.last_validated_ms / DAY_MS) as u32,
            };
            if let Ok(mut shard) = self.shards[shard_of(subject)].write() {
                shard.upsert(subject, recipient, entry);
            }
        })?;
        Ok(log.consents())
    }

    /// Puts consents read from the store (another replica wrote them) into the index.
    pub fn index_all(&self, consents: &[Consent]) {
        for c in consents {
            if let Ok(mut shard) = self.shard_for(&c.subject).write() {
                self.index_into(&mut shard, c);
            }
        }
    }

    /// Re-reads one consent from the store into the index (another replica changed it).
    pub fn refresh(&self, id: &str) -> Result<(), StoreError> {
        let Some(c) = self.store.get(id)? else { return Ok(()) };
        if let Ok(mut shard) = self.shard_for(&c.subject).write() {
            // Read again under the shard's lock: a change made here meanwhile is not undone.
            let c = self.store.get(id)?.unwrap_or(c);
            self.index_into(&mut shard, &c);
        }
        Ok(())
    }

    pub fn store(&self) -> &ConsentStore {
        &self.store
    }

    fn shard_for(&self, subject: &str) -> &RwLock<Shard> {
        let n = Niss::parse(subject).map_or(0, Niss::as_u64);
        &self.shards[shard_of(n)]
    }

    fn intern(&self, s: &str) -> u32 {
        if let Some(i) = self.names.load().get(s) {
            return i;
        }
        let Ok(_writer) = self.names_write.lock() else { return u32::MAX };
        let mut names = Names::clone(&self.names.load());
        let next = names.ids.len() as u32;
        // A cell holds a name in 16 bits, u16::MAX meaning none: past that, a name is not
        // interned and its consents match nothing (refused, never wrongly permitted).
        if next >= u32::from(u16::MAX) && names.get(s).is_none() {
            tracing::error!("over 65,534 service and purpose names: consents for a new one cannot be indexed");
            return u32::MAX;
        }
        let id = *names.ids.entry(s.into()).or_insert(next);
        self.names.store(Arc::new(names));
        id
    }

    fn index_into(&self, shard: &mut Shard, c: &Consent) {
        let (Ok(niss), Some(rk), Some(id)) =
            (Niss::parse(&c.subject), recipient_key(&c.recipient), ConsentId::parse(&c.id))
        else {
            return;
        };
        let entry = Entry {
            service: self.intern(&c.service),
            purpose: self.intern(&c.purpose),
            valid_until_ms: c.valid_until_ms,
            revoked: c.revoked_at_ms.is_some(),
            id: id.halves(),
            validated_day: (c.last_validated_ms / DAY_MS) as u32,
        };
        shard.upsert(niss.as_u64(), rk, entry);
    }

    /// Records a new consent (durable when it returns) and indexes it.
    pub fn give(&self, c: &Consent, actor: &str) -> Result<(), ChangeError> {
        let _changing = self.change()?;
        let mut shard =
            self.shard_for(&c.subject).write().map_err(|_| ChangeError::Invalid("index poisoned".into()))?;
        self.store.put(c, "given", c.given_at_ms, actor)?;
        self.index_into(&mut shard, c);
        Ok(())
    }

    /// Records many consents (a migration, a load test) in one durable write — those whose id
    /// the store does not hold yet: a consent imported before is not written over, whatever
    /// happened to it since. Durable and indexed when it returns; returns how many were new.
    pub fn import(&self, consents: &[Consent], actor: &str) -> Result<usize, ChangeError> {
        let _changing = self.change()?;
        let written = self.store.put_new(consents, "imported", actor)?;
        for &(i, offset) in &written {
            let c = &consents[i];
            let mut shard =
                self.shard_for(&c.subject).write().map_err(|_| ChangeError::Invalid("index poisoned".into()))?;
            // The consent is in the store before it is in the index: a change made in between
            // (a revocation, under this shard's lock) is newer than what was imported, and the
            // index takes the store's latest state. (On the shared store that change's
            // notification refreshes the index.)
            match &self.store {
                ConsentStore::Log(log)
                    if ConsentId::parse(&c.id).and_then(|id| log.latest_offset(id)) != Some(offset) =>
                {
                    if let Some(latest) = self.store.get(&c.id)? {
                        self.index_into(&mut shard, &latest);
                    }
                }
                _ => self.index_into(&mut shard, c),
            }
        }
        Ok(written.len())
    }

    /// Marks a consent revoked (durable when it returns); the next check refuses.
    pub fn revoke(&self, id: &str, at_ms: u64, actor: &str) -> Result<Consent, ChangeError> {
        let _changing = self.change()?;
        let mut c = self.store.get(id)?.ok_or(ChangeError::NotFound)?;
        if c.revoked_at_ms.is_some() {
            return Err(ChangeError::AlreadyRevoked);
        }
        c.revoked_at_ms = Some(at_ms);
        let mut shard =
            self.shard_for(&c.subject).write().map_err(|_| ChangeError::Invalid("index poisoned".into()))?;
        self.store.put(&c, "revoked", at_ms, actor)?;
        self.index_into(&mut shard, &c);
        Ok(c)
    }

    /// Records the citizen's yearly re-validation.
    pub fn revalidate(&self, id: &str, at_ms: u64, actor: &str) -> Result<Consent, ChangeError> {
        let _changing = self.change()?;
        let mut c = self.store.get(id)?.ok_or(ChangeError::NotFound)?;
        if c.revoked_at_ms.is_some() {
            return Err(ChangeError::AlreadyRevoked);
        }
        c.last_validated_ms = at_ms;
        let mut shard =
            self.shard_for(&c.subject).write().map_err(|_| ChangeError::Invalid("index poisoned".into()))?;
        self.store.put(&c, "revalidated", at_ms, actor)?;
        self.index_into(&mut shard, &c);
        Ok(c)
    }

    /// Records that the citizen was invited to re-validate (art. 5/6, 7/5): an event of the
    /// consent's history; the consent itself does not change.
    pub fn invite(&self, id: &str, at_ms: u64, actor: &str) -> Result<Consent, ChangeError> {
        let _changing = self.change()?;
        let c = self.store.get(id)?.ok_or(ChangeError::NotFound)?;
        if c.revoked_at_ms.is_some() {
            return Err(ChangeError::AlreadyRevoked);
        }
        let _shard = self.shard_for(&c.subject).write().map_err(|_| ChangeError::Invalid("index poisoned".into()))?;
        self.store.put(&c, "invited", at_ms, actor)?;
        Ok(c)
    }

    /// Asks for the memory that [`check`](Self::check) of `subject` for this recipient (the
    /// organisation, or its kind) reads, without waiting for it. The data plane calls it as
    /// soon as the envelope names the person, so that the cache lines arrive while the call
    /// is authorised: at ten million consents a check that finds them in the cache takes a
    /// fraction of one that waits for memory. Nothing is asked for when no consent names
    /// `service` (a flow that needs none, most often): asking costs a wait of its own, for the
    /// address's translation. Allocation-free; a shard being changed is skipped (the check
    /// then waits for memory, and for the change, as without this).
    pub fn prefetch(&self, subject: Niss, recipient: Kbo, kind: Option<OrgKind>, service: &str) {
        if self.names.load().get(service).is_none() {
            return;
        }
        let Ok(shard) = self.shards[shard_of(subject.as_u64())].try_read() else { return };
        for key in [Some(recipient.as_u64()), kind.map(kind_key)].into_iter().flatten() {
            shard.table.prefetch(cell_hash(subject.as_u64(), pack_recipient(key)));
        }
    }

    /// Is there a consent of `subject` for this recipient (the organisation, or its kind),
    /// service and purpose, valid at `now_ms`? With `revalidate_days`, a consent the citizen
    /// has not validated in that many days does not count (the source's rule "stop").
    /// Allocation-free; never touches the disk.
    #[allow(clippy::too_many_arguments)]
    pub fn check(
        &self,
        subject: Niss,
        recipient: Kbo,
        kind: Option<OrgKind>,
        service: &str,
        purpose: &str,
        now_ms: u64,
        revalidate_days: Option<u32>,
    ) -> Result<ConsentId, Denial> {
        let names = self.names.load();
        let (Some(service), Some(purpose)) = (names.get(service), names.get(purpose)) else {
            return Err(Denial::Missing);
        };
        drop(names);
        // Names past 16 bits are never in a cell (see `intern`).
        let (Ok(service), Ok(purpose)) = (u16::try_from(service), u16::try_from(purpose)) else {
            return Err(Denial::Missing);
        };
        let Ok(shard) = self.shards[shard_of(subject.as_u64())].read() else { return Err(Denial::Missing) };
        let mut denial = Denial::Missing;
        let keys = [Some(recipient.as_u64()), kind.map(kind_key)];
        for key in keys.into_iter().flatten() {
            for e in shard.cells(subject.as_u64(), key).filter(|e| e.service == service && e.purpose == purpose) {
                if e.revoked() {
                    denial = Denial::Revoked;
                } else if now_ms >= e.valid_until_ms {
                    if denial == Denial::Missing {
                        denial = Denial::Expired;
                    }
                } else if revalidate_days.is_some_and(|d| now_ms / DAY_MS >= e.validated_day() + u64::from(d)) {
                    if matches!(denial, Denial::Missing | Denial::Expired) {
                        denial = Denial::RevalidationDue;
                    }
                } else {
                    return Ok(e.id());
                }
            }
        }
        Err(denial)
    }

    /// The consents whose re-validation is due at `now_ms`, among `services` (each with its
    /// re-validation period in days): not revoked, last validated that many days ago or more.
    /// They are found in the index, without reading the store; the `limit` most overdue are then
    /// read from the store (oldest validation first, then by id). Returns them with how many
    /// are due in all.
    pub fn due(
        &self,
        services: &[(&str, u32)],
        now_ms: u64,
        limit: usize,
    ) -> Result<(Vec<Consent>, usize), StoreError> {
        let names = self.names.load();
        let periods: Vec<(u16, u64)> = services
            .iter()
            .filter_map(|(s, days)| names.get(s).and_then(|i| u16::try_from(i).ok()).map(|i| (i, u64::from(*days))))
            .collect();
        drop(names);
        let today = now_ms / DAY_MS;
        let mut total = 0usize;
        // The `limit` most overdue so far: a max-heap whose top is the least overdue kept.
        let mut heap: std::collections::BinaryHeap<(u64, u128)> = std::collections::BinaryHeap::new();
        for shard in self.shards.iter() {
            let Ok(shard) = shard.read() else { continue };
            for c in shard.table.iter().filter(|c| !c.revoked()) {
                let Some((_, days)) = periods.iter().find(|(s, _)| *s == c.service) else { continue };
                if today >= c.validated_day() + days {
                    total += 1;
                    heap.push((c.validated_day(), c.id().0));
                    if heap.len() > limit {
                        heap.pop();
                    }
                }
            }
        }
        let mut out = Vec::with_capacity(heap.len());
        for (_, id) in heap.into_sorted_vec() {
            out.extend(self.store.get(&ConsentId(id).to_text())?);
        }
        Ok((out, total))
    }

    /// How many consents the index holds.
    pub fn len(&self) -> usize {
        self.shards.iter().map(|s| s.read().map_or(0, |s| s.len())).sum()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// The id of the consent a bulk import makes from line `line` (its number `n`) for `actor`:
/// the same line of the same file gives the same id, so an import resumed after a stop does
/// not give the consents of its last, unacknowledged batch twice.
pub fn import_id(actor: &str, n: u64, line: &str) -> ConsentId {
    use sha2::Digest as _;
    let mut h = sha2::Sha256::new();
    h.update(b"passerelle consent import\n");
    h.update(actor.as_bytes());
    h.update(n.to_be_bytes());
    h.update(line.trim().as_bytes());
    let d = h.finalize();
    let mut b = [0u8; 16];
    b.copy_from_slice(&d[..16]);
    ConsentId(u128::from_be_bytes(b))
}

/// A fresh consent id.
pub fn new_id() -> ConsentId {
    let mut b = [0u8; 16];
    if ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut b).is_err() {
        let t = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default().as_nanos();
        b = t.to_be_bytes();
    }
    ConsentId(u128::from_be_bytes(b))
}

/// A consent as asked for (API body, CLI arguments), before validation.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NewConsent {
    pub subject: String,
    pub recipient: Recipient,
    pub service: String,
    pub purpose: String,
    #[serde(default)]
    pub scope: Vec<String>,
    /// RFC 3339 time, or a date (valid through that day, UTC).
    pub valid_until: String,
    pub evidence: String,
    /// The instance through which the citizen gave it; required when an administrator records
    /// it, absent when a citizen access point does.
    #[serde(default)]
    pub instance: Option<String>,
}

/// Why a new consent is refused; `Subject` is told apart for its own refusal code.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Invalid {
    #[error("{0}")]
    Subject(String),
    #[error("{0}")]
    Request(String),
}

fn until_ms(s: &str) -> Result<u64, Invalid> {
    if let Ok(t) = time::OffsetDateTime::parse(s, &time::format_description::well_known::Rfc3339) {
        return u64::try_from(t.unix_timestamp_nanos() / 1_000_000)
            .map_err(|_| Invalid::Request("valid_until is before 1970".into()));
    }
    let d = time::Date::parse(s, time::macros::format_description!("[year]-[month]-[day]"))
        .map_err(|_| Invalid::Request("valid_until must be an RFC 3339 time or a YYYY-MM-DD date".into()))?;
    Ok((d.midnight().assume_utc().unix_timestamp() as u64 + 86_400) * 1000)
}

impl NewConsent {
    /// Checks the request against the policy in force and makes the record. `actor` is the
    /// enterprise number of the citizen access point (`portal`) or the administrator recording it.
    pub fn validate(
        self,
        snapshot: &policies::Snapshot,
        actor: Kbo,
        portal: bool,
        now_ms: u64,
    ) -> Result<Consent, Invalid> {
        let niss = Niss::parse(&self.subject).map_err(|e| Invalid::Subject(e.to_string()))?;
        let recipient = match &self.recipient {
            Recipient::Org(k) => {
                let kbo = Kbo::parse(k).map_err(|e| Invalid::Request(format!("recipient: {e}")))?;
                if snapshot.organisation(kbo).is_none() {
                    return Err(Invalid::Request(
                        "recipient: no organisation with this enterprise number is registered".into(),
                    ));
                }
                let mut d = [0u8; 10];
                Recipient::Org(kbo.digits(&mut d).to_owned())
            }
            Recipient::Kind(k) => Recipient::Kind(*k),
        };
        if !snapshot.consent_based(&self.service, &self.purpose) {
            return Err(Invalid::Request(
                "no consent-based flow exists for this service and purpose: a consent would authorize nothing".into(),
            ));
        }
        let valid_until_ms = until_ms(&self.valid_until)?;
        if valid_until_ms <= now_ms {
            return Err(Invalid::Request("valid_until is in the past".into()));
        }
        if self.evidence.trim().is_empty() {
            return Err(Invalid::Request("evidence is required (the reference of the signed form or session)".into()));
        }
        let mut d = [0u8; 10];
        let given_via = match (portal, self.instance.as_deref()) {
            (true, None) => Channel::CitizenAccessPoint(actor.digits(&mut d).to_owned()),
            (true, Some(_)) => {
                return Err(Invalid::Request("a citizen access point gives consent itself: omit instance".into()));
            }
            (false, Some(i)) => {
                let k = Kbo::parse(i).map_err(|e| Invalid::Request(format!("instance: {e}")))?;
                Channel::Instance(k.digits(&mut d).to_owned())
            }
            (false, None) => {
                return Err(Invalid::Request(
                    "an administrator records a consent given through an instance: name it".into(),
                ));
            }
        };
        let mut sd = [0u8; 11];
        Ok(Consent {
            id: new_id().to_text(),
            subject: niss.digits(&mut sd).to_owned(),
            recipient,
            service: self.service,
            purpose: self.purpose,
            scope: self.scope,
            given_at_ms: now_ms,
            valid_until_ms,
            revoked_at_ms: None,
            given_via,
            evidence: self.evidence,
            last_validated_ms: now_ms,
        })
    }
}
