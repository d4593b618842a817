//! The consent registry (DOMAIN.md §3): who consented that which recipient obtains which data
//! for which purpose, until when — checked at request time, revocable at once, never lost.
//!
//! Records follow the shape of ISO/IEC TS 27560 / Kantara consent receipts: who (subject), to
//! whom (recipient), what (service), why (purpose), since and until when, how given, evidence.
//!
//! Two copies, kept in step:
//! * the store (sled tree `consents`, plus an event history), the source of truth; a change is
//!   durable (flushed) before it is acknowledged, and a revoked consent is marked, not deleted;
//! * an in-memory index for the data plane, sharded by data subject. A change takes its shard's
//!   write lock, makes the store durable, updates the index, and only then releases the lock
//!   and acknowledges: a reader never sees the index disagree with the store, and after the
//!   acknowledgement the very next request sees the change. At start the index is rebuilt
//!   from the store, so a crash loses nothing acknowledged.
//!
//! [`Registry::check`] allocates nothing and never touches the disk.

mod image;

/// The index image's file name in the embedded store's directory.
pub const IMAGE_FILE: &str = "consent-index.img";

use std::path::PathBuf;
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

    pub fn parse(s: &str) -> Option<Self> {
        let hex = s.strip_prefix("c-")?;
        (hex.len() == 32).then(|| u128::from_str_radix(hex, 16).ok()).flatten().map(ConsentId)
    }
}

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

impl Entry {
    fn id(&self) -> ConsentId {
        ConsentId(u128::from(self.id[0]) << 64 | u128::from(self.id[1]))
    }
}

fn halves(id: ConsentId) -> [u64; 2] {
    [(id.0 >> 64) as u64, id.0 as u64]
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

/// The consents of one (subject, recipient) with their key, in exactly one cache line: nearly
/// always one consent, kept inline, so a hit reads the table's control bytes and this line
/// and follows no pointer. (With the key beside an 80-byte value, as a map stores them, a
/// bucket straddled two lines and a hit cost two to three memory misses with a million
/// consents.)
#[derive(Debug, Clone)]
#[repr(C, align(64))]
struct Slot {
    subject: u64,
    recipient: u64,
    first: Entry,
    /// A thin pointer (a boxed slice's would be two words and push the slot past a line).
    #[allow(clippy::box_collection)]
    more: Option<Box<Vec<Entry>>>,
}

const _: () = assert!(std::mem::size_of::<Slot>() == 64);

impl Slot {
    fn iter(&self) -> impl Iterator<Item = &Entry> {
        std::iter::once(&self.first).chain(self.more.iter().flat_map(|m| m.iter()))
    }

    fn upsert(&mut self, e: Entry) {
        if self.first.id == e.id {
            self.first = e;
        } else if let Some(x) = self.more.iter_mut().flat_map(|m| m.iter_mut()).find(|x| x.id == e.id) {
            *x = e;
        } else {
            self.more.get_or_insert_default().push(e);
        }
    }
}

/// One shard of the index: slots in an open-addressing table (hashbrown's), 64-byte aligned.
#[derive(Debug, Default)]
struct Shard {
    table: hashbrown::HashTable<Slot>,
}

fn slot_hash(subject: u64, recipient: u64) -> u64 {
    use std::hash::BuildHasher as _;
    rustc_hash::FxBuildHasher.hash_one((subject, recipient))
}

impl Shard {
    fn get(&self, key: &(u64, u64)) -> Option<&Slot> {
        self.table.find(slot_hash(key.0, key.1), |s| (s.subject, s.recipient) == *key)
    }

    fn upsert(&mut self, subject: u64, recipient: u64, e: Entry) {
        let hash = slot_hash(subject, recipient);
        match self.table.find_mut(hash, |s| (s.subject, s.recipient) == (subject, recipient)) {
            Some(slot) => slot.upsert(e),
            None => {
                self.table.insert_unique(hash, Slot { subject, recipient, first: e, more: None }, |s| {
                    slot_hash(s.subject, s.recipient)
                });
            }
        }
    }

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
    /// Whether an image written by [`Registry::save_image`] is armed: the next change disarms
    /// it before it is made (a change after a stop's image, e.g. on a connection that outlived
    /// the stop, must not leave a stale image trusted).
    armed: std::sync::atomic::AtomicBool,
}

/// The consents' persistence: sled trees in the embedded store, or tables in the shared
/// PostgreSQL store (where a change also notifies every replica).
#[derive(Debug, Clone)]
pub enum ConsentStore {
    Sled(SledConsents),
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
    /// The consents in the embedded store's database.
    pub fn open(db: &sled::Db) -> Result<Self, StoreError> {
        SledConsents::open(db).map(ConsentStore::Sled)
    }

    /// Writes `c` and an event, and makes both durable.
    fn put(&self, c: &Consent, event: &str, at_ms: u64, actor: &str) -> Result<(), StoreError> {
        match self {
            ConsentStore::Sled(s) => s.put(c, event, at_ms, actor),
            ConsentStore::Postgres(p) => {
                p.consent_put(std::slice::from_ref(c), &[event_json(c, event, at_ms, actor).to_string()])
            }
        }
    }

    /// Writes many consents with their events (each at its `given_at_ms`), durable when it
    /// returns.
    fn put_many(&self, consents: &[Consent], event: &str, actor: &str) -> Result<(), StoreError> {
        match self {
            ConsentStore::Sled(s) => {
                for c in consents {
                    s.put_unflushed(c, event, c.given_at_ms, actor)?;
                }
                s.db.flush()?;
                Ok(())
            }
            ConsentStore::Postgres(p) => {
                let events: Vec<String> =
                    consents.iter().map(|c| event_json(c, event, c.given_at_ms, actor).to_string()).collect();
                p.consent_put(consents, &events)
            }
        }
    }

    pub fn get(&self, id: &str) -> Result<Option<Consent>, StoreError> {
        match self {
            ConsentStore::Sled(s) => s.get(id),
            ConsentStore::Postgres(p) => p.consent_get(id),
        }
    }

    /// Every consent of a subject, with revoked ones, oldest first.
    pub fn of_subject(&self, subject: &str) -> Result<Vec<Consent>, StoreError> {
        let mut v = match self {
            ConsentStore::Sled(s) => s.of_subject(subject)?,
            ConsentStore::Postgres(p) => p.consent_of_subject(subject)?,
        };
        v.sort_by_key(|c: &Consent| c.given_at_ms);
        Ok(v)
    }

    /// The history of one consent: given, revalidated, revoked, with times and actors.
    pub fn history(&self, id: &str) -> Result<Vec<serde_json::Value>, StoreError> {
        match self {
            ConsentStore::Sled(s) => s.history(id),
            ConsentStore::Postgres(p) => p.consent_history(id),
        }
    }

    /// Calls `f` with every consent (the embedded store streams them; a million need not be
    /// held at once); returns how many.
    pub fn each(&self, mut f: impl FnMut(&Consent)) -> Result<usize, StoreError> {
        let mut n = 0;
        let mut count = |c: &Consent| {
            f(c);
            n += 1;
        };
        match self {
            ConsentStore::Sled(s) => s.all().for_each(|c| count(&c)),
            ConsentStore::Postgres(p) => p.consent_all()?.iter().for_each(count),
        }
        Ok(n)
    }
}

/// The consents in sled trees.
#[derive(Debug, Clone)]
pub struct SledConsents {
    db: sled::Db,
    /// subject ‖ id → consent JSON.
    consents: sled::Tree,
    /// id → subject (to find a consent by id).
    by_id: sled::Tree,
    /// time ‖ id → event JSON (the history).
    events: sled::Tree,
}

impl SledConsents {
    fn open(db: &sled::Db) -> Result<Self, StoreError> {
        Ok(SledConsents {
            db: db.clone(),
            consents: db.open_tree("consents")?,
            by_id: db.open_tree("consent_ids")?,
            events: db.open_tree("consent_events")?,
        })
    }

    fn key(subject: &str, id: &str) -> Vec<u8> {
        let mut k = Vec::with_capacity(subject.len() + 1 + id.len());
        k.extend_from_slice(subject.as_bytes());
        k.push(0);
        k.extend_from_slice(id.as_bytes());
        k
    }

    /// Writes `c` and an event, and makes both durable.
    fn put(&self, c: &Consent, event: &str, at_ms: u64, actor: &str) -> Result<(), StoreError> {
        self.put_unflushed(c, event, at_ms, actor)?;
        self.db.flush()?;
        Ok(())
    }

    fn put_unflushed(&self, c: &Consent, event: &str, at_ms: u64, actor: &str) -> Result<(), StoreError> {
        let value = serde_json::to_vec(c).unwrap_or_default();
        self.consents.insert(Self::key(&c.subject, &c.id), value)?;
        self.by_id.insert(c.id.as_bytes(), c.subject.as_bytes())?;
        let mut ek = at_ms.to_be_bytes().to_vec();
        ek.extend_from_slice(c.id.as_bytes());
        let ev = event_json(c, event, at_ms, actor);
        self.events.insert(ek, ev.to_string().as_bytes())?;
        Ok(())
    }

    fn get(&self, id: &str) -> Result<Option<Consent>, StoreError> {
        let Some(subject) = self.by_id.get(id.as_bytes())? else { return Ok(None) };
        let subject = String::from_utf8_lossy(&subject).into_owned();
        Ok(self.consents.get(Self::key(&subject, id))?.and_then(|v| serde_json::from_slice(&v).ok()))
    }

    fn of_subject(&self, subject: &str) -> Result<Vec<Consent>, StoreError> {
        let mut prefix = subject.as_bytes().to_vec();
        prefix.push(0);
        let mut v = Vec::new();
        for kv in self.consents.scan_prefix(prefix) {
            let (_, value) = kv?;
            if let Ok(c) = serde_json::from_slice(&value) {
                v.push(c);
            }
        }
        Ok(v)
    }

    fn history(&self, id: &str) -> Result<Vec<serde_json::Value>, StoreError> {
        let mut out = Vec::new();
        for kv in self.events.iter() {
            let (k, v) = kv?;
            if k.len() > 8 && &k[8..] == id.as_bytes() {
                out.extend(serde_json::from_slice(&v).ok());
            }
        }
        Ok(out)
    }

    fn all(&self) -> impl Iterator<Item = Consent> + '_ {
        self.consents.iter().filter_map(|kv| kv.ok().and_then(|(_, v)| serde_json::from_slice(&v).ok()))
    }
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
    /// the image a clean stop left there if the store still vouches for it, and otherwise
    /// builds it from the store. Either way the image is disarmed before anything can change
    /// (see [`image`]).
    pub fn open_with_image(store: ConsentStore, image: Option<PathBuf>) -> Result<Self, StoreError> {
        let mut r = Registry {
            shards: (0..SHARDS).map(|_| RwLock::new(Shard::default())).collect(),
            names: ArcSwap::from_pointee(Names::default()),
            names_write: std::sync::Mutex::new(()),
            store,
            image,
            from_image: false,
            armed: std::sync::atomic::AtomicBool::new(false),
        };
        if let (ConsentStore::Sled(s), Some(path)) = (&r.store, &r.image) {
            let marker = s.db.remove(image::MARKER)?;
            s.db.flush()?;
            let expected: Option<[u8; 32]> = marker.and_then(|m| m.as_ref().try_into().ok());
            if let Some(expected) = expected {
                let started = std::time::Instant::now();
                match image::read(path, &expected) {
                    Ok(Some((names, shards))) => {
                        r.names = ArcSwap::from_pointee(names);
                        r.shards = shards.into_iter().map(RwLock::new).collect();
                        r.from_image = true;
                        tracing::info!(
                            keys = r.len(),
                            ms = started.elapsed().as_millis() as u64,
                            "consent index read from its image"
                        );
                        return Ok(r);
                    }
                    Ok(None) => tracing::warn!("consent index image does not match the store; rebuilding the index"),
                    Err(e) => tracing::warn!(error = %e, "consent index image unreadable; rebuilding the index"),
                }
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

    /// Writes the index's image and arms it (the embedded store's marker holds its digest),
    /// for the next start; at a clean stop, when nothing changes any more. Returns the
    /// (subject, recipient) keys written, or `None` without an image path or store for it.
    pub fn save_image(&self) -> Result<Option<usize>, StoreError> {
        let (ConsentStore::Sled(s), Some(path)) = (&self.store, &self.image) else { return Ok(None) };
        let guards: Vec<_> = self.shards.iter().map(|sh| sh.read().unwrap_or_else(|p| p.into_inner())).collect();
        let shards: Vec<&Shard> = guards.iter().map(|g| &**g).collect();
        let names = self.names.load();
        let digest = image::write(path, &names, &shards).map_err(StoreError::Image)?;
        s.db.insert(image::MARKER, &digest[..])?;
        s.db.flush()?;
        self.armed.store(true, std::sync::atomic::Ordering::SeqCst);
        Ok(Some(shards.iter().map(|sh| sh.len()).sum()))
    }

    /// Before a change: an armed image no longer describes the store once the change is made,
    /// so its marker goes first, durably.
    fn disarm(&self) -> Result<(), StoreError> {
        if self.armed.swap(false, std::sync::atomic::Ordering::SeqCst)
            && let ConsentStore::Sled(s) = &self.store
        {
            s.db.remove(image::MARKER)?;
            s.db.flush()?;
        }
        Ok(())
    }

    /// Reads every consent from the store into the index (at start, and when a replica of a
    /// shared store has missed notifications). Consents are never deleted, only marked, so
    /// indexing them all again brings the index up to date. Returns how many were read.
    pub fn reload(&self) -> Result<usize, StoreError> {
        self.store.each(|c| {
            if let Ok(mut shard) = self.shard_for(&c.subject).write() {
                self.index_into(&mut shard, c);
            }
        })
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
            id: halves(id),
            validated_day: (c.last_validated_ms / DAY_MS) as u32,
        };
        shard.upsert(niss.as_u64(), rk, entry);
    }

    /// Records a new consent (durable when it returns) and indexes it.
    pub fn give(&self, c: &Consent, actor: &str) -> Result<(), ChangeError> {
        let mut shard =
            self.shard_for(&c.subject).write().map_err(|_| ChangeError::Invalid("index poisoned".into()))?;
        self.disarm()?;
        self.store.put(c, "given", c.given_at_ms, actor)?;
        self.index_into(&mut shard, c);
        Ok(())
    }

    /// Records many consents (a migration, a load test) with one flush at the end; durable and
    /// indexed when it returns.
    pub fn import(&self, consents: &[Consent], actor: &str) -> Result<(), ChangeError> {
        self.disarm()?;
        self.store.put_many(consents, "imported", actor)?;
        for c in consents {
            let mut shard =
                self.shard_for(&c.subject).write().map_err(|_| ChangeError::Invalid("index poisoned".into()))?;
            self.index_into(&mut shard, c);
        }
        Ok(())
    }

    /// Marks a consent revoked (durable when it returns); the next check refuses.
    pub fn revoke(&self, id: &str, at_ms: u64, actor: &str) -> Result<Consent, ChangeError> {
        let mut c = self.store.get(id)?.ok_or(ChangeError::NotFound)?;
        if c.revoked_at_ms.is_some() {
            return Err(ChangeError::AlreadyRevoked);
        }
        c.revoked_at_ms = Some(at_ms);
        let mut shard =
            self.shard_for(&c.subject).write().map_err(|_| ChangeError::Invalid("index poisoned".into()))?;
        self.disarm()?;
        self.store.put(&c, "revoked", at_ms, actor)?;
        self.index_into(&mut shard, &c);
        Ok(c)
    }

    /// Records the citizen's yearly re-validation.
    pub fn revalidate(&self, id: &str, at_ms: u64, actor: &str) -> Result<Consent, ChangeError> {
        let mut c = self.store.get(id)?.ok_or(ChangeError::NotFound)?;
        if c.revoked_at_ms.is_some() {
            return Err(ChangeError::AlreadyRevoked);
        }
        c.last_validated_ms = at_ms;
        let mut shard =
            self.shard_for(&c.subject).write().map_err(|_| ChangeError::Invalid("index poisoned".into()))?;
        self.disarm()?;
        self.store.put(&c, "revalidated", at_ms, actor)?;
        self.index_into(&mut shard, &c);
        Ok(c)
    }

    /// Records that the citizen was invited to re-validate (art. 5/6, 7/5): an event of the
    /// consent's history; the consent itself does not change.
    pub fn invite(&self, id: &str, at_ms: u64, actor: &str) -> Result<Consent, ChangeError> {
        let c = self.store.get(id)?.ok_or(ChangeError::NotFound)?;
        if c.revoked_at_ms.is_some() {
            return Err(ChangeError::AlreadyRevoked);
        }
        let _shard = self.shard_for(&c.subject).write().map_err(|_| ChangeError::Invalid("index poisoned".into()))?;
        self.store.put(&c, "invited", at_ms, actor)?;
        Ok(c)
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
        let Ok(shard) = self.shards[shard_of(subject.as_u64())].read() else { return Err(Denial::Missing) };
        let mut denial = Denial::Missing;
        let keys = [Some(recipient.as_u64()), kind.map(kind_key)];
        for key in keys.into_iter().flatten() {
            let Some(slot) = shard.get(&(subject.as_u64(), key)) else { continue };
            for e in slot.iter().filter(|e| e.service == service && e.purpose == purpose) {
                if e.revoked {
                    denial = Denial::Revoked;
                } else if now_ms >= e.valid_until_ms {
                    if denial == Denial::Missing {
                        denial = Denial::Expired;
                    }
                } else if revalidate_days.is_some_and(|d| now_ms / DAY_MS >= u64::from(e.validated_day) + u64::from(d))
                {
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

    /// How many (subject, recipient) keys the index holds.
    pub fn len(&self) -> usize {
        self.shards.iter().map(|s| s.read().map_or(0, |s| s.len())).sum()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
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
