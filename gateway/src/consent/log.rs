//! The embedded store's consents: one append-only log of binary records (`consents.log` in the
//! store's directory), the history included, about 70 bytes a consent change.
//!
//! Why not sled, which keeps the rest of the embedded store: a consent in sled took 3.5–3.7 KB
//! of disk (JSON values, three trees, sled's own pages and segments) and imported at 23,000 a
//! second; a country's consents would have taken 37 GB. Consents are never deleted and seldom
//! changed, every change is kept as history, and the data plane reads them from the in-memory
//! index, not from the store: an append-only log fits them exactly.
//!
//! Format (little-endian), specified here and nowhere else since only the gateway reads it:
//! * a header: `PCLOG001` and the log's random 16-byte identity (the index image names it);
//! * frames, each one commit: `u32` magic `PCF1`, `u32` payload length, `u32` CRC-32 of the
//!   log's identity, the frame's offset in the file (`u64`) and the payload, the payload; a frame is written whole and synced (`fdatasync`) before the change
//!   it holds is acknowledged, so a batch is all there or not at all;
//! * in a payload, records: a tag byte, the body's length (LEB128), the body.
//!   * tag 1, a name: UTF-8 bytes. Names (services, purposes, scopes, actors, events, kinds)
//!     are numbered in the order they appear in the log, from 0, and records name them by
//!     number (LEB128).
//!   * tag 2, a consent as it stands after one event: the event's name, its time (ms), the
//!     actor's name, the offset of this consent's previous record plus one (0 for none), then
//!     the consent — its id (16 bytes, big-endian), subject, recipient (`0` and digits, or `1`
//!     and a kind's name), service, purpose, the scope (a count and names), given, valid until,
//!     revoked (0, or the time plus one), the channel (`0` citizen access point, `1` instance,
//!     then digits), the evidence (a length and UTF-8 bytes), last validated. Digits (NISS,
//!     enterprise numbers) are one LEB128 number `value << 5 | count of digits`, or `0` then a
//!     length and the text when they are not 1–15 decimal digits.
//!
//! A consent's history is the chain of its records, each naming the previous one; the latest
//! record is its current state. In memory the log keeps only the names and, per consent id,
//! the offset of its latest record (the locator, a sorted array of 12 bytes a consent: 48 bits
//! of the id's hash and the offset); the index the data plane reads is [`super::Registry`]'s.
//!
//! Opening reads every frame and checks its CRC. A damaged last frame is what a crash during a
//! write leaves (nothing in it was acknowledged): it is cut off. A damaged frame followed by a
//! valid one, or a whole frame that fails its checksum with more bytes after it, is not a
//! crash: the log is refused, since cutting there would drop acknowledged changes — a
//! revocation among them.

use std::fs::File;
use std::hash::{BuildHasher, RandomState};
use std::io::{BufReader, Read, Write as _};
use std::os::unix::fs::FileExt as _;
use std::path::{Path, PathBuf};
use std::sync::{Mutex, RwLock};

use rustc_hash::FxHashMap;

use super::{Channel, Consent, ConsentId, Recipient};
use crate::store::StoreError;

const MAGIC: &[u8; 8] = b"PCLOG001";
const HEADER: u64 = 24;
const FRAME_MAGIC: u32 = u32::from_le_bytes(*b"PCF1");
const FRAME_HEADER: usize = 12;
const NAME: u8 = 1;
const CONSENT: u8 = 2;
/// A frame larger than this is damage (a batch of 100,000 consents takes about 7 MB).
const MAX_FRAME: u32 = 1 << 30;

fn log_err(path: &Path, what: impl std::fmt::Display) -> StoreError {
    StoreError::ConsentLog(format!("{}: {what}", path.display()))
}

/// What opening the log found.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Recovery {
    pub records: u64,
    pub consents: usize,
    /// Bytes of an unfinished last frame, cut off.
    pub torn_bytes: u64,
}

#[derive(Debug, Default)]
struct Names {
    names: Vec<Box<str>>,
    ids: FxHashMap<Box<str>, u32>,
}

impl Names {
    fn name(&self, id: u64) -> Result<&str, String> {
        self.names.get(id as usize).map(|s| &**s).ok_or_else(|| format!("name {id} is not defined"))
    }
}

#[derive(Debug)]
struct Writer {
    file: File,
    len: u64,
    /// Set when a failed write could not be undone: the log takes no more changes.
    broken: bool,
}

/// The consent log (see the module's documentation).
#[derive(Debug)]
pub struct ConsentLog {
    path: PathBuf,
    identity: [u8; 16],
    /// For reads at an offset (`pread`); appends go through `writer`.
    file: File,
    writer: Mutex<Writer>,
    names: RwLock<Names>,
    /// Consent id → offset of its latest record.
    locator: RwLock<Locator>,
    /// The length of the log up to its last durable frame.
    len: std::sync::atomic::AtomicU64,
}

/// Consent id → offset of its latest record, 12 bytes a consent: a sorted array of slots, each
/// 48 bits of the id's keyed hash and the record's offset (48 bits), and a map of the consents
/// added since it was last merged (whole ids), merged in when it reaches an eighth of the array.
///
/// 48 bits of hash leave one chance in 28 million that a consent among ten million shares them
/// with another, so a lookup reads the id of the record each matching slot points at (one,
/// nearly always) to tell them apart: the caller reads that record anyway. The hash is keyed
/// afresh by each process (SipHash), so ids that are not random (an import's own numbering)
/// spread as well as random ones. The whole id took 24 bytes a consent (120 MB more at ten
/// million, the process over 1 GiB); a hash map took 42.
#[derive(Debug, Default)]
struct Locator<K = RandomState> {
    keys: K,
    /// Sorted by prefix; slots of one prefix in any order.
    sorted: Vec<Slot>,
    recent: FxHashMap<u128, u64>,
}

/// 48 bits of an id's hash and an offset of 48 bits, in three words (no 8-byte alignment).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
struct Slot([u32; 3]);

/// The largest offset a slot holds: a log of 256 TiB.
const MAX_OFFSET: u64 = (1 << 48) - 1;

/// The 48 bits of `id`'s hash a slot keeps.
fn prefix_of(keys: &impl BuildHasher, id: u128) -> u64 {
    keys.hash_one(id) >> 16
}

impl Slot {
    fn new(prefix: u64, offset: u64) -> Slot {
        debug_assert!(offset <= MAX_OFFSET && prefix >> 48 == 0);
        Slot([(prefix >> 16) as u32, ((prefix & 0xffff) << 16 | (offset >> 32) & 0xffff) as u32, offset as u32])
    }

    fn prefix(self) -> u64 {
        u64::from(self.0[0]) << 16 | u64::from(self.0[1] >> 16)
    }

    fn offset(self) -> u64 {
        u64::from(self.0[1] & 0xffff) << 32 | u64::from(self.0[2])
    }
}

impl<K: BuildHasher> Locator<K> {
    /// From a slot for every consent record in the log's order (its prefix under `keys`) and
    /// the records a later one names as its previous (as slots: that later record's prefix and
    /// the offset it names): the latest record per id. `id_at` reads the id of the record at an
    /// offset.
    fn build(keys: K, mut slots: Vec<Slot>, mut superseded: Vec<Slot>, id_at: impl Fn(u64) -> Option<u128>) -> Self {
        // Records older than their consent's latest, known from the chain (and only where the
        // record named is of the same id, as far as its prefix tells): in the log's order, as
        // `slots` are.
        superseded.sort_unstable_by_key(|s| s.offset());
        let mut gone = superseded.iter().peekable();
        slots.retain(|s| {
            while gone.next_if(|g| g.offset() < s.offset()).is_some() {}
            gone.peek().is_none_or(|g| **g != *s)
        });
        drop(superseded);
        slots.sort_unstable_by_key(|s| s.prefix());
        // Within a prefix shared by several slots (ids that share 48 bits, or records the chain
        // did not name), the latest record of each id.
        let mut older = Vec::new();
        for run in slots.chunk_by(|a, b| a.prefix() == b.prefix()).filter(|r| r.len() > 1) {
            let mut latest: Vec<(Option<u128>, u64)> = Vec::new();
            for s in run {
                let id = id_at(s.offset());
                match latest.iter_mut().find(|(seen, _)| id.is_some() && *seen == id) {
                    Some((_, at)) => {
                        older.push((*at).min(s.offset()));
                        *at = (*at).max(s.offset());
                    }
                    None => latest.push((id, s.offset())),
                }
            }
        }
        if !older.is_empty() {
            older.sort_unstable();
            slots.retain(|s| older.binary_search(&s.offset()).is_err());
        }
        slots.shrink_to_fit();
        Locator { keys, sorted: slots, recent: FxHashMap::default() }
    }

    /// Where the slots of `prefix` are in `sorted`.
    fn run_of(&self, prefix: u64) -> std::ops::Range<usize> {
        let start = self.sorted.partition_point(|s| s.prefix() < prefix);
        start..start + self.sorted[start..].iter().take_while(|s| s.prefix() == prefix).count()
    }

    /// Where consent `id` is among the slots `run`: the one whose record holds `id`.
    fn position(
        &self,
        mut run: std::ops::Range<usize>,
        id: u128,
        id_at: impl Fn(u64) -> Option<u128>,
    ) -> Option<usize> {
        run.find(|&i| id_at(self.sorted[i].offset()) == Some(id))
    }

    fn get(&self, id: u128, id_at: impl Fn(u64) -> Option<u128>) -> Option<u64> {
        if let Some(at) = self.recent.get(&id) {
            return Some(*at);
        }
        let run = self.run_of(prefix_of(&self.keys, id));
        self.position(run, id, id_at).map(|i| self.sorted[i].offset())
    }

    /// Consent `id`, whose latest record was at `prev` (`None`: a consent the log did not
    /// hold), is now at `offset`. The slot is found by its prefix and `prev`, without reading
    /// the log; `id_at` reads the records before, should `prev` not be where the locator is.
    fn set(&mut self, id: u128, prev: Option<u64>, offset: u64, id_at: impl Fn(u64) -> Option<u128>) {
        if let Some(at) = self.recent.get_mut(&id) {
            *at = offset;
            return;
        }
        if let Some(prev) = prev {
            let prefix = prefix_of(&self.keys, id);
            let run = self.run_of(prefix);
            let found = run.clone().find(|&i| self.sorted[i].offset() == prev);
            if let Some(i) = found.or_else(|| self.position(run, id, id_at)) {
                self.sorted[i] = Slot::new(prefix, offset);
                return;
            }
        }
        self.recent.insert(id, offset);
        if self.recent.len() > (self.sorted.len() / 8).max(4096) {
            self.merge();
        }
    }

    /// Merges `recent` into `sorted`, from the back, in place.
    fn merge(&mut self) {
        let keys = &self.keys;
        let mut add: Vec<Slot> = self.recent.drain().map(|(id, at)| Slot::new(prefix_of(keys, id), at)).collect();
        add.sort_unstable_by_key(|s| s.prefix());
        let old = self.sorted.len();
        self.sorted.reserve_exact(add.len());
        self.sorted.resize(old + add.len(), Slot::default());
        let (mut i, mut j, mut k) = (old, add.len(), self.sorted.len());
        while j > 0 {
            k -= 1;
            if i > 0 && self.sorted[i - 1].prefix() > add[j - 1].prefix() {
                self.sorted[k] = self.sorted[i - 1];
                i -= 1;
            } else {
                self.sorted[k] = add[j - 1];
                j -= 1;
            }
        }
    }

    fn len(&self) -> usize {
        self.sorted.len() + self.recent.len()
    }

    /// Every consent's latest offset, ascending.
    fn offsets(&self) -> Vec<u64> {
        let mut v: Vec<u64> = self.sorted.iter().map(|s| s.offset()).chain(self.recent.values().copied()).collect();
        v.sort_unstable();
        v
    }
}

// --- encoding -------------------------------------------------------------------------------

fn put_varint(out: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        out.push(v as u8 | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

struct Cursor<'a> {
    b: &'a [u8],
    at: usize,
}

impl<'a> Cursor<'a> {
    fn varint(&mut self) -> Result<u64, String> {
        let mut v = 0u64;
        for shift in (0..64).step_by(7) {
            let byte = *self.b.get(self.at).ok_or("record cut short")?;
            self.at += 1;
            v |= u64::from(byte & 0x7f) << shift;
            if byte < 0x80 {
                return Ok(v);
            }
        }
        Err("a number over 64 bits".into())
    }

    fn bytes(&mut self, n: usize) -> Result<&'a [u8], String> {
        let end = self.at.checked_add(n).filter(|e| *e <= self.b.len()).ok_or("record cut short")?;
        let s = &self.b[self.at..end];
        self.at = end;
        Ok(s)
    }

    fn u8(&mut self) -> Result<u8, String> {
        Ok(self.bytes(1)?[0])
    }

    fn text(&mut self) -> Result<String, String> {
        let n = self.varint()? as usize;
        String::from_utf8(self.bytes(n)?.to_vec()).map_err(|_| "text is not UTF-8".into())
    }

    fn digits(&mut self) -> Result<String, String> {
        let v = self.varint()?;
        let count = (v & 31) as usize;
        if count == 0 {
            return self.text();
        }
        Ok(format!("{:0count$}", v >> 5))
    }
}

fn put_text(out: &mut Vec<u8>, s: &str) {
    put_varint(out, s.len() as u64);
    out.extend_from_slice(s.as_bytes());
}

fn put_digits(out: &mut Vec<u8>, s: &str) {
    match s.parse::<u64>() {
        Ok(v) if (1..=15).contains(&s.len()) && s.bytes().all(|b| b.is_ascii_digit()) => {
            put_varint(out, v << 5 | s.len() as u64);
        }
        _ => {
            put_varint(out, 0);
            put_text(out, s);
        }
    }
}

fn kind_name(kind: policies::model::OrgKind) -> String {
    serde_json::to_value(kind).ok().and_then(|v| v.as_str().map(str::to_owned)).unwrap_or_default()
}

/// One change to append: the consent as it stands after `event`.
pub(super) struct Change<'a> {
    pub consent: &'a Consent,
    pub event: &'a str,
    pub at_ms: u64,
    pub actor: &'a str,
}

/// Encodes records into one frame's payload, defining the names it uses that the log lacks.
struct Encoder<'n> {
    names: &'n Names,
    added: Vec<Box<str>>,
    added_ids: FxHashMap<Box<str>, u32>,
    payload: Vec<u8>,
    body: Vec<u8>,
}

impl Encoder<'_> {
    fn name(&mut self, s: &str) -> u64 {
        if let Some(id) = self.names.ids.get(s).or_else(|| self.added_ids.get(s)) {
            return u64::from(*id);
        }
        let id = (self.names.names.len() + self.added.len()) as u32;
        self.added.push(s.into());
        self.added_ids.insert(s.into(), id);
        self.payload.push(NAME);
        put_text(&mut self.payload, s);
        u64::from(id)
    }

    /// Appends a consent record; returns its offset within the payload.
    fn consent(&mut self, ch: &Change<'_>, prev: Option<u64>) -> Result<usize, String> {
        let c = ch.consent;
        let id = ConsentId::parse(&c.id).ok_or("a consent id is not c- and 32 hex digits")?;
        let mut b = std::mem::take(&mut self.body);
        b.clear();
        put_varint(&mut b, self.name(ch.event));
        put_varint(&mut b, ch.at_ms);
        put_varint(&mut b, self.name(ch.actor));
        put_varint(&mut b, prev.map_or(0, |p| p + 1));
        b.extend_from_slice(&id.0.to_be_bytes());
        put_digits(&mut b, &c.subject);
        match &c.recipient {
            Recipient::Org(k) => {
                b.push(0);
                put_digits(&mut b, k);
            }
            Recipient::Kind(kind) => {
                b.push(1);
                put_varint(&mut b, self.name(&kind_name(*kind)));
            }
        }
        put_varint(&mut b, self.name(&c.service));
        put_varint(&mut b, self.name(&c.purpose));
        put_varint(&mut b, c.scope.len() as u64);
        for s in &c.scope {
            put_varint(&mut b, self.name(s));
        }
        put_varint(&mut b, c.given_at_ms);
        put_varint(&mut b, c.valid_until_ms);
        put_varint(&mut b, c.revoked_at_ms.map_or(0, |t| t + 1));
        match &c.given_via {
            Channel::CitizenAccessPoint(k) => {
                b.push(0);
                put_digits(&mut b, k);
            }
            Channel::Instance(k) => {
                b.push(1);
                put_digits(&mut b, k);
            }
        }
        put_text(&mut b, &c.evidence);
        put_varint(&mut b, c.last_validated_ms);
        let at = self.payload.len();
        self.payload.push(CONSENT);
        put_varint(&mut self.payload, b.len() as u64);
        self.payload.extend_from_slice(&b);
        self.body = b;
        Ok(at)
    }
}

/// What the index takes from a consent record, read without allocating: names are the log's
/// numbers (see [`ConsentLog::name`]), digits their numeric value (`None` when the record holds
/// text where digits belong: the index skips such a consent, as it skips one it cannot parse).
#[derive(Debug, Clone, Copy)]
pub(super) struct Indexed {
    pub id: u128,
    pub subject: Option<u64>,
    /// An enterprise number, or (`Err`) the name of a kind.
    pub recipient: Result<Option<u64>, u32>,
    pub service: u32,
    pub purpose: u32,
    pub valid_until_ms: u64,
    pub revoked: bool,
    pub last_validated_ms: u64,
}

fn digits_value(c: &mut Cursor<'_>) -> Result<Option<u64>, String> {
    let v = c.varint()?;
    if v & 31 == 0 {
        let n = c.varint()? as usize;
        c.bytes(n)?;
        return Ok(None);
    }
    Ok(Some(v >> 5))
}

fn name_id(c: &mut Cursor<'_>) -> Result<u32, String> {
    u32::try_from(c.varint()?).map_err(|_| "a name number over 32 bits".into())
}

fn decode_indexed(body: &[u8]) -> Result<Indexed, String> {
    let mut c = Cursor { b: body, at: 0 };
    let id = read_id(&mut c)?;
    let subject = digits_value(&mut c)?;
    let recipient = match c.u8()? {
        0 => Ok(digits_value(&mut c)?),
        1 => Err(name_id(&mut c)?),
        t => return Err(format!("unknown recipient tag {t}")),
    };
    let service = name_id(&mut c)?;
    let purpose = name_id(&mut c)?;
    for _ in 0..c.varint()? {
        c.varint()?;
    }
    let _given_at = c.varint()?;
    let valid_until_ms = c.varint()?;
    let revoked = c.varint()? != 0;
    let _channel = c.u8()?;
    digits_value(&mut c)?;
    let n = c.varint()? as usize;
    c.bytes(n)?;
    let last_validated_ms = c.varint()?;
    Ok(Indexed { id, subject, recipient, service, purpose, valid_until_ms, revoked, last_validated_ms })
}

/// A consent record as read back.
struct Record {
    event: String,
    at_ms: u64,
    actor: String,
    prev: Option<u64>,
    consent: Consent,
}

/// The offset of the record a consent record's body names as its previous, and its id: the
/// fourth number and the 16 bytes after it.
fn read_head(c: &mut Cursor<'_>) -> Result<(Option<u64>, u128), String> {
    for _ in 0..3 {
        c.varint()?;
    }
    let prev = c.varint()?.checked_sub(1);
    let b: [u8; 16] = c.bytes(16)?.try_into().map_err(|_| "record cut short")?;
    Ok((prev, u128::from_be_bytes(b)))
}

fn read_id(c: &mut Cursor<'_>) -> Result<u128, String> {
    read_head(c).map(|(_, id)| id)
}

/// The id in the consent record at `offset` of a log durable up to `end`, or `None` if there is
/// no consent record there.
fn id_in(file: &File, end: u64, offset: u64) -> Option<u128> {
    // A tag, the body's length and four numbers (ten bytes each at most), then the id.
    let mut head = [0u8; 1 + 10 + 40 + 16];
    let n = (end.saturating_sub(offset) as usize).min(head.len());
    file.read_exact_at(&mut head[..n], offset).ok()?;
    if head[0] != CONSENT {
        return None;
    }
    let mut c = Cursor { b: &head[..n], at: 1 };
    c.varint().ok()?;
    read_id(&mut c).ok()
}

fn decode(body: &[u8], names: &Names) -> Result<Record, String> {
    let mut c = Cursor { b: body, at: 0 };
    let event = names.name(c.varint()?)?.to_owned();
    let at_ms = c.varint()?;
    let actor = names.name(c.varint()?)?.to_owned();
    let prev = c.varint()?.checked_sub(1);
    let id = u128::from_be_bytes(c.bytes(16)?.try_into().map_err(|_| "record cut short")?);
    let subject = c.digits()?;
    let recipient = match c.u8()? {
        0 => Recipient::Org(c.digits()?),
        1 => {
            let name = names.name(c.varint()?)?;
            Recipient::Kind(
                serde_json::from_value(serde_json::Value::String(name.to_owned()))
                    .map_err(|_| format!("unknown kind {name:?}"))?,
            )
        }
        t => return Err(format!("unknown recipient tag {t}")),
    };
    let service = names.name(c.varint()?)?.to_owned();
    let purpose = names.name(c.varint()?)?.to_owned();
    let n = c.varint()?;
    let mut scope = Vec::new();
    for _ in 0..n {
        scope.push(names.name(c.varint()?)?.to_owned());
    }
    let given_at_ms = c.varint()?;
    let valid_until_ms = c.varint()?;
    let revoked_at_ms = c.varint()?.checked_sub(1);
    let given_via = match c.u8()? {
        0 => Channel::CitizenAccessPoint(c.digits()?),
        1 => Channel::Instance(c.digits()?),
        t => return Err(format!("unknown channel tag {t}")),
    };
    let evidence = c.text()?;
    let last_validated_ms = c.varint()?;
    Ok(Record {
        event,
        at_ms,
        actor,
        prev,
        consent: Consent {
            id: ConsentId(id).to_text(),
            subject,
            recipient,
            service,
            purpose,
            scope,
            given_at_ms,
            valid_until_ms,
            revoked_at_ms,
            given_via,
            evidence,
            last_validated_ms,
        },
    })
}

/// Splits a payload into records: `(offset in payload, tag, body)`.
fn records(payload: &[u8]) -> impl Iterator<Item = Result<(usize, u8, &[u8]), String>> {
    let mut at = 0;
    std::iter::from_fn(move || {
        if at >= payload.len() {
            return None;
        }
        let start = at;
        let mut c = Cursor { b: payload, at: at + 1 };
        let r = c.varint().and_then(|n| c.bytes(n as usize)).map(|body| (start, payload[start], body));
        at = if r.is_ok() { c.at } else { payload.len() };
        Some(r)
    })
}

/// A frame's checksum: CRC-32 of the log's identity, the frame's offset (`u64`) and its
/// payload. Identity and offset tie a frame to its log and its place, so bytes shaped like a
/// frame inside another one's payload (a consent's evidence is text a caller chooses, and the
/// identity never leaves the store) are not taken for a frame of their own when a torn write
/// is told from damage.
fn crc(identity: &[u8; 16], at: u64, payload: &[u8]) -> u32 {
    let mut h = crc32fast::Hasher::new();
    h.update(identity);
    h.update(&at.to_le_bytes());
    h.update(payload);
    h.finalize()
}

/// Is there a whole, valid frame at `at`?
fn frame_at(file: &File, identity: &[u8; 16], at: u64, end: u64) -> bool {
    let mut h = [0u8; FRAME_HEADER];
    if at + FRAME_HEADER as u64 > end || file.read_exact_at(&mut h, at).is_err() {
        return false;
    }
    let word = |i: usize| u32::from_le_bytes([h[i], h[i + 1], h[i + 2], h[i + 3]]);
    let (len, sum) = (word(4), word(8));
    if word(0) != FRAME_MAGIC || len == 0 || len > MAX_FRAME || at + FRAME_HEADER as u64 + u64::from(len) > end {
        return false;
    }
    let mut payload = vec![0u8; len as usize];
    file.read_exact_at(&mut payload, at + FRAME_HEADER as u64).is_ok() && crc(identity, at, &payload) == sum
}

/// Is there a valid frame anywhere in `[from, end)`? (Tells damage from a torn last frame.)
fn valid_frame_after(file: &File, identity: &[u8; 16], from: u64, end: u64) -> bool {
    let magic = FRAME_MAGIC.to_le_bytes();
    let mut buf = vec![0u8; 1 << 20];
    let mut at = from;
    while at + 4 <= end {
        let n = ((end - at) as usize).min(buf.len());
        if file.read_exact_at(&mut buf[..n], at).is_err() {
            return false;
        }
        for i in 0..n.saturating_sub(3) {
            if buf[i..i + 4] == magic && frame_at(file, identity, at + i as u64, end) {
                return true;
            }
        }
        // Overlap by three bytes so a magic across two reads is seen.
        at += (n as u64).saturating_sub(3).max(1);
    }
    false
}

fn sync_dir(path: &Path) -> std::io::Result<()> {
    match path.parent() {
        Some(dir) => File::open(dir)?.sync_all(),
        None => Ok(()),
    }
}

impl ConsentLog {
    /// Opens (or creates) the log at `path`, cuts off a torn last frame, and reads the names
    /// and the locator. Refuses a log damaged before its end. One process at a time: the
    /// gateway opens it inside the embedded store's directory, which sled locks.
    pub fn open(path: &Path) -> Result<(Self, Recovery), StoreError> {
        let io = |e: std::io::Error| log_err(path, e);
        if !path.exists() {
            let tmp = path.with_extension("new");
            let mut f = File::create(&tmp).map_err(io)?;
            let mut head = MAGIC.to_vec();
            let mut identity = [0u8; 16];
            ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut identity)
                .map_err(|_| log_err(path, "no randomness for the log's identity"))?;
            head.extend_from_slice(&identity);
            f.write_all(&head).map_err(io)?;
            f.sync_all().map_err(io)?;
            std::fs::rename(&tmp, path).map_err(io)?;
            sync_dir(path).map_err(io)?;
        }
        let write = std::fs::OpenOptions::new().read(true).write(true).open(path).map_err(io)?;
        let file = write.try_clone().map_err(io)?;
        let end = file.metadata().map_err(io)?.len();
        let mut head = [0u8; HEADER as usize];
        file.read_exact_at(&mut head, 0).map_err(|_| log_err(path, "no header: not a consent log"))?;
        if &head[..8] != MAGIC {
            return Err(log_err(path, "not a consent log (bad magic)"));
        }
        let identity: [u8; 16] = head[8..].try_into().map_err(|_| log_err(path, "bad header"))?;
        let mut names = Names::default();
        let keys = RandomState::new();
        let mut slots: Vec<Slot> = Vec::new();
        let mut superseded: Vec<Slot> = Vec::new();
        let mut recovery = Recovery::default();
        let mut at = HEADER;
        let mut reader = BufReader::with_capacity(4 << 20, file.try_clone().map_err(io)?);
        std::io::Seek::seek(&mut reader, std::io::SeekFrom::Start(HEADER)).map_err(io)?;
        let mut payload = Vec::new();
        // Where a frame whose header is whole but whose checksum fails ends.
        let mut whole_frame_end = None;
        let good = loop {
            if at == end {
                break at;
            }
            let mut h = [0u8; FRAME_HEADER];
            if at + FRAME_HEADER as u64 > end || reader.read_exact(&mut h).is_err() {
                break at;
            }
            let word = |i: usize| u32::from_le_bytes([h[i], h[i + 1], h[i + 2], h[i + 3]]);
            let (len, sum) = (word(4), word(8));
            if word(0) != FRAME_MAGIC || len == 0 || len > MAX_FRAME || at + FRAME_HEADER as u64 + u64::from(len) > end
            {
                break at;
            }
            payload.resize(len as usize, 0);
            if reader.read_exact(&mut payload).is_err() || crc(&identity, at, &payload) != sum {
                whole_frame_end = Some(at + FRAME_HEADER as u64 + u64::from(len));
                break at;
            }
            let base = at + FRAME_HEADER as u64;
            for r in records(&payload) {
                let (off, tag, body) = r.map_err(|e| log_err(path, format!("frame at byte {at}: {e}")))?;
                match tag {
                    NAME => {
                        let s = std::str::from_utf8(body)
                            .map_err(|_| log_err(path, format!("frame at byte {at}: a name is not UTF-8")))?;
                        let id = names.names.len() as u32;
                        names.ids.insert(s.into(), id);
                        names.names.push(s.into());
                    }
                    CONSENT => {
                        let (prev, id) = read_head(&mut Cursor { b: body, at: 0 })
                            .map_err(|e| log_err(path, format!("frame at byte {at}: {e}")))?;
                        let offset = base + off as u64;
                        if offset > MAX_OFFSET {
                            return Err(log_err(path, "a log over 256 TiB"));
                        }
                        let prefix = prefix_of(&keys, id);
                        slots.push(Slot::new(prefix, offset));
                        superseded.extend(prev.filter(|p| *p <= MAX_OFFSET).map(|p| Slot::new(prefix, p)));
                    }
                    t => return Err(log_err(path, format!("frame at byte {at}: unknown record tag {t}"))),
                }
                recovery.records += 1;
            }
            at = base + u64::from(len);
        };
        if good < end {
            // A torn write is the last frame: one that is whole with more after it, or a valid
            // frame anywhere after it, is damage.
            if whole_frame_end.is_some_and(|e| e < end) || valid_frame_after(&file, &identity, good + 1, end) {
                return Err(log_err(
                    path,
                    format!(
                        "damaged at byte {good}, with frames after it: not a torn last write; \
                         refusing to cut acknowledged changes (restore the log from a backup)"
                    ),
                ));
            }
            write.set_len(good).map_err(io)?;
            write.sync_all().map_err(io)?;
            recovery.torn_bytes = end - good;
            tracing::warn!(bytes = end - good, "consent log: an unfinished last frame was cut off");
        }
        let locator = Locator::build(keys, slots, superseded, |at| id_in(&file, good, at));
        recovery.consents = locator.len();
        let log = ConsentLog {
            path: path.to_owned(),
            identity,
            file,
            writer: Mutex::new(Writer { file: write, len: good, broken: false }),
            names: RwLock::new(names),
            locator: RwLock::new(locator),
            len: std::sync::atomic::AtomicU64::new(good),
        };
        Ok((log, recovery))
    }

    /// The log's identity and its durable length: what an index image was made from.
    pub fn state(&self) -> ([u8; 16], u64) {
        (self.identity, self.len.load(std::sync::atomic::Ordering::Acquire))
    }

    /// How many consents the log holds.
    pub fn consents(&self) -> usize {
        self.locator.read().map_or(0, |l| l.len())
    }

    /// Appends `changes` as one frame and syncs it; durable (all of them, or none) when it
    /// returns.
    pub(super) fn append(&self, changes: &[Change<'_>]) -> Result<(), StoreError> {
        self.append_where(changes, false).map(drop)
    }

    /// The offset of the latest record of consent `id`.
    pub(super) fn latest_offset(&self, id: ConsentId) -> Option<u64> {
        self.locator.read().ok()?.get(id.0, |at| self.id_at(at))
    }

    /// The id in the consent record at `offset`.
    fn id_at(&self, offset: u64) -> Option<u128> {
        id_in(&self.file, self.len.load(std::sync::atomic::Ordering::Acquire), offset)
    }

    /// Appends, as one frame, the changes whose consent the log does not hold yet (nor an
    /// earlier change of the batch): an import, which must never write over a consent changed
    /// since (a revocation). Decided under the writer's lock, so two imports of the same
    /// consents cannot both write it. Returns the changes written: their indices and the
    /// offsets of their records.
    pub(super) fn append_new(&self, changes: &[Change<'_>]) -> Result<Vec<(usize, u64)>, StoreError> {
        self.append_where(changes, true)
    }

    fn append_where(&self, changes: &[Change<'_>], only_new: bool) -> Result<Vec<(usize, u64)>, StoreError> {
        if changes.is_empty() {
            return Ok(Vec::new());
        }
        let mut w = self.writer.lock().map_err(|_| log_err(&self.path, "writer poisoned"))?;
        if w.broken {
            return Err(log_err(&self.path, "a failed write could not be undone: restart the gateway"));
        }
        let names = self.names.read().map_err(|_| log_err(&self.path, "names poisoned"))?;
        let mut enc = Encoder {
            names: &names,
            added: Vec::new(),
            added_ids: FxHashMap::default(),
            payload: Vec::with_capacity(changes.len() * 80),
            body: Vec::with_capacity(128),
        };
        let mut offsets = Vec::with_capacity(changes.len());
        let mut written = Vec::with_capacity(changes.len());
        {
            let locator = self.locator.read().map_err(|_| log_err(&self.path, "locator poisoned"))?;
            let mut within: FxHashMap<u128, u64> = FxHashMap::default();
            for (i, ch) in changes.iter().enumerate() {
                let id = ConsentId::parse(&ch.consent.id).map(|i| i.0).unwrap_or_default();
                let prev = within.get(&id).copied().or_else(|| locator.get(id, |at| self.id_at(at)));
                if only_new && prev.is_some() {
                    continue;
                }
                let at = enc.consent(ch, prev).map_err(|e| log_err(&self.path, e))?;
                let offset = w.len + FRAME_HEADER as u64 + at as u64;
                written.push((i, offset));
                within.insert(id, offset);
                offsets.push((id, prev, offset));
            }
        }
        let (added, payload) = (enc.added, enc.payload);
        drop(names);
        if written.is_empty() {
            return Ok(written);
        }
        let len = u32::try_from(payload.len()).ok().filter(|l| *l <= MAX_FRAME);
        let len = len.ok_or_else(|| log_err(&self.path, "a batch over 1 GiB: import in smaller batches"))?;
        if w.len + (FRAME_HEADER + payload.len()) as u64 > MAX_OFFSET {
            return Err(log_err(&self.path, "the log has reached 256 TiB"));
        }
        let mut frame = Vec::with_capacity(FRAME_HEADER + payload.len());
        frame.extend_from_slice(&FRAME_MAGIC.to_le_bytes());
        frame.extend_from_slice(&len.to_le_bytes());
        frame.extend_from_slice(&crc(&self.identity, w.len, &payload).to_le_bytes());
        frame.extend_from_slice(&payload);
        let start = w.len;
        let synced = w.file.write_all_at(&frame, start).and_then(|()| w.file.sync_data());
        if let Err(e) = synced {
            // Leave no half frame behind: the next start would take it for a torn write, but
            // later frames would make it damage.
            if w.file.set_len(start).and_then(|()| w.file.sync_data()).is_err() {
                w.broken = true;
            }
            return Err(log_err(&self.path, format!("append failed: {e}")));
        }
        w.len = start + frame.len() as u64;
        {
            let mut names = self.names.write().map_err(|_| log_err(&self.path, "names poisoned"))?;
            for s in added {
                let id = names.names.len() as u32;
                names.ids.insert(s.clone(), id);
                names.names.push(s);
            }
        }
        // The length before the locator: a reader that finds an offset can read it, and a
        // scan that sees an older record still reaches the newer one (see `each`).
        self.len.store(w.len, std::sync::atomic::Ordering::Release);
        let mut locator = self.locator.write().map_err(|_| log_err(&self.path, "locator poisoned"))?;
        for (id, prev, offset) in offsets {
            locator.set(id, prev, offset, |at| self.id_at(at));
        }
        Ok(written)
    }

    /// The record at `offset` (a consent record's tag byte).
    fn record_at(&self, offset: u64) -> Result<Record, StoreError> {
        let bad = |e: String| log_err(&self.path, format!("record at byte {offset}: {e}"));
        let mut head = [0u8; 11];
        let end = self.len.load(std::sync::atomic::Ordering::Acquire);
        let n = ((end.saturating_sub(offset)) as usize).min(head.len());
        self.file.read_exact_at(&mut head[..n], offset).map_err(|e| bad(e.to_string()))?;
        if head[0] != CONSENT {
            return Err(bad("not a consent record".into()));
        }
        let mut c = Cursor { b: &head[..n], at: 1 };
        let len = c.varint().map_err(bad)?;
        // Checked when the log was opened; a length the log cannot hold is damage since.
        if len > end.saturating_sub(offset) {
            return Err(bad(format!("a record of {len} bytes past the log's end")));
        }
        let mut body = vec![0u8; len as usize];
        self.file.read_exact_at(&mut body, offset + c.at as u64).map_err(|e| bad(e.to_string()))?;
        let names = self.names.read().map_err(|_| bad("names poisoned".into()))?;
        decode(&body, &names).map_err(bad)
    }

    fn latest(&self, id: &str) -> Option<u64> {
        self.latest_offset(ConsentId::parse(id)?)
    }

    /// Whether the log holds a consent with this id.
    pub fn contains(&self, id: &str) -> bool {
        self.latest(id).is_some()
    }

    /// The consent with this id as it stands.
    pub fn get(&self, id: &str) -> Result<Option<Consent>, StoreError> {
        self.latest(id).map(|at| self.record_at(at).map(|r| r.consent)).transpose()
    }

    /// The consent's events, oldest first.
    pub fn history(&self, id: &str) -> Result<Vec<serde_json::Value>, StoreError> {
        let mut out = Vec::new();
        let mut next = self.latest(id);
        while let Some(at) = next {
            let r = self.record_at(at)?;
            out.push(super::event_json(&r.consent, &r.event, r.at_ms, &r.actor));
            next = r.prev.filter(|p| *p < at);
        }
        out.reverse();
        Ok(out)
    }

    /// The name the log numbers `id`.
    pub(super) fn name(&self, id: u32) -> Option<String> {
        self.names.read().ok()?.names.get(id as usize).map(|s| s.to_string())
    }

    /// Calls `f` with the offset and body of every consent record, in the order written, up
    /// to the log's durable end (read anew after each frame, so changes made meanwhile are
    /// reached too). A descriptor of its own: a duplicate would share the file position.
    fn consent_records(&self, mut f: impl FnMut(u64, &[u8]) -> Result<(), StoreError>) -> Result<(), StoreError> {
        let io = |e: std::io::Error| log_err(&self.path, e);
        let mut reader = BufReader::with_capacity(4 << 20, File::open(&self.path).map_err(io)?);
        std::io::Seek::seek(&mut reader, std::io::SeekFrom::Start(HEADER)).map_err(io)?;
        let (mut at, mut payload) = (HEADER, Vec::new());
        while at < self.len.load(std::sync::atomic::Ordering::Acquire) {
            let mut h = [0u8; FRAME_HEADER];
            reader.read_exact(&mut h).map_err(io)?;
            let len = u32::from_le_bytes([h[4], h[5], h[6], h[7]]);
            payload.resize(len as usize, 0);
            reader.read_exact(&mut payload).map_err(io)?;
            let base = at + FRAME_HEADER as u64;
            for r in records(&payload) {
                let (off, tag, body) = r.map_err(|e| log_err(&self.path, e))?;
                if tag == CONSENT {
                    f(base + off as u64, body)?;
                }
            }
            at = base + u64::from(len);
        }
        Ok(())
    }

    /// Calls `f` with every consent record in the order they were written (a consent changed
    /// after it was given comes more than once, its latest state last), reading only what the
    /// index needs and allocating nothing per record: the index's rebuild. Returns how many.
    pub(super) fn scan(&self, mut f: impl FnMut(&Indexed)) -> Result<usize, StoreError> {
        let mut n = 0;
        self.consent_records(|_, body| {
            f(&decode_indexed(body).map_err(|e| log_err(&self.path, e))?);
            n += 1;
            Ok(())
        })?;
        Ok(n)
    }

    /// Calls `f` with every consent as it stood when the call began (each exactly once, its
    /// latest record then), reading the log once from the start; returns how many.
    pub fn each(&self, mut f: impl FnMut(&Consent)) -> Result<usize, StoreError> {
        let poisoned = || log_err(&self.path, "lock poisoned");
        let wanted = self.locator.read().map_err(|_| poisoned())?.offsets();
        let mut next = wanted.iter().peekable();
        let mut n = 0;
        self.consent_records(|offset, body| {
            while next.next_if(|w| **w < offset).is_some() {}
            if next.next_if(|w| **w == offset).is_some() {
                let r =
                    decode(body, &*self.names.read().map_err(|_| poisoned())?).map_err(|e| log_err(&self.path, e))?;
                f(&r.consent);
                n += 1;
            }
            Ok(())
        })?;
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::{Locator, Slot, prefix_of};
    use rustc_hash::{FxHashMap, FxHasher};
    use std::hash::BuildHasher;

    /// The locator answers as a map would, across many merges, for new ids and changed ones,
    /// with ids that share their 48-bit prefix, whether the records name their previous one or
    /// not.
    #[test]
    fn the_locator_answers_as_a_map_across_merges() {
        for chained in [true, false] {
            let mut x = 0x9E37_79B9_7F4A_7C15u64;
            let mut rand = move || {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                x
            };
            // Prefixes from a thousand: most ids share theirs with dozens of others.
            // Ids numbered from 1, as an import may number them, and random ones.
            // Ids numbered from 1, as an import may number them, and random ones.
            let id = |rand: &mut dyn FnMut() -> u64, few: bool| -> u128 {
                if few { u128::from(rand() % 50_000 + 1) } else { u128::from(rand()) << 64 | u128::from(rand()) }
            };
            let mut known = Vec::new();
            let mut oracle: FxHashMap<u128, u64> = FxHashMap::default();
            let mut id_of: FxHashMap<u64, u128> = FxHashMap::default();
            let (mut slots, mut superseded) = (Vec::new(), Vec::new());
            for at in 0..20_000u64 {
                let id = id(&mut rand, true);
                known.push(id);
                slots.push(Slot::new(prefix_of(&Few, id), at));
                if let Some(prev) = oracle.insert(id, at).filter(|_| chained) {
                    superseded.push(Slot::new(prefix_of(&Few, id), prev));
                }
                id_of.insert(at, id);
            }
            let mut l = Locator::build(Few, slots, superseded, |at| id_of.get(&at).copied());
            assert_eq!(l.len(), oracle.len());
            for at in 20_000..120_000u64 {
                // Half new ids, half changes of known ones.
                let id = match at % 4 {
                    0 => id(&mut rand, false),
                    1 => id(&mut rand, true),
                    _ => known[(rand() % known.len() as u64) as usize],
                };
                known.push(id);
                id_of.insert(at, id);
                // The previous record as the log names it; now and then one the locator does
                // not hold, which it then finds by the id.
                let prev = oracle.get(&id).map(|p| if at % 7 == 0 { p + 1_000_000 } else { *p });
                l.set(id, prev, at, |at| id_of.get(&at).copied());
                oracle.insert(id, at);
            }
            assert!(l.recent.len() < 20_000 && l.sorted.len() > 40_000, "merged on the way");
            assert_eq!(l.len(), oracle.len());
            assert!(l.sorted.windows(2).all(|w| w[0].prefix() <= w[1].prefix()), "sorted by prefix");
            for (id, at) in &oracle {
                assert_eq!(l.get(*id, |at| id_of.get(&at).copied()), Some(*at));
            }
            let absent = (1u128..).find(|i| !oracle.contains_key(i)).unwrap_or_default();
            assert_eq!(l.get(absent, |at| id_of.get(&at).copied()), None, "a prefix held, the id not");
            let mut offsets: Vec<u64> = oracle.values().copied().collect();
            offsets.sort_unstable();
            assert_eq!(l.offsets(), offsets);
        }
    }

    /// Keys under which an id shares its prefix with dozens of others (a thousand prefixes).
    #[derive(Default)]
    struct Few;

    #[derive(Default)]
    struct FewHasher(FxHasher);

    impl std::hash::Hasher for FewHasher {
        fn write(&mut self, bytes: &[u8]) {
            self.0.write(bytes);
        }

        fn finish(&self) -> u64 {
            (self.0.finish() % 1_000) << 16
        }
    }

    impl BuildHasher for Few {
        type Hasher = FewHasher;

        fn build_hasher(&self) -> FewHasher {
            FewHasher::default()
        }
    }

    #[test]
    fn a_slot_keeps_48_bits_of_prefix_and_of_offset() {
        let s = Slot::new(0xfedc_ba98_7654, super::MAX_OFFSET);
        assert_eq!((s.prefix(), s.offset()), (0xfedc_ba98_7654, super::MAX_OFFSET));
        let s = Slot::new(0xfedc_ba98_7654, 0x1234_5678_9abc);
        assert_eq!((s.prefix(), s.offset()), (0xfedc_ba98_7654, 0x1234_5678_9abc));
        assert_eq!(std::mem::size_of::<Slot>(), 12);
    }
}
