//! The append side of the audit trail: one writer thread, group commit, fail-closed.
//!
//! Requests hand their record to [`AuditTrail::append`] and wait. The writer thread takes every
//! record waiting, assigns sequence numbers, chains the hashes, writes the batch in one
//! write that is durable when it returns ([`super::durable`]), then answers every waiter. A response
//! leaves the gateway only after that answer. Blocking file I/O stays off the async runtime.
//!
//! If writing or syncing fails (disk full, I/O error, read-only file system), every record of
//! the batch is answered with an error — the calls fail closed with `AUDIT_UNAVAILABLE` — and
//! the file is cut back to its last durable length before the next batch is tried, so the trail
//! never holds a half-written or unacknowledged-then-lost record. When writing works again the
//! gateway recovers by itself.

use std::fs::{File, OpenOptions};
use std::io::Write as _;
use std::os::unix::fs::FileExt as _;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock, mpsc};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use ring::signature::{Ed25519KeyPair, KeyPair as _};

use super::durable::SegmentFile;
use super::format::{self, Checkpoint, FrameError, GENESIS, HEADER_LEN, KIND_CHECKPOINT, KIND_RECORD};
use super::index::{AuditIndex, IndexEntry, Keys, Outgoing};
use super::record::{Record, with_seq};
use super::spare::{self, Spare};

/// Settings of the trail.
#[derive(Debug, Clone)]
pub struct TrailConfig {
    pub dir: PathBuf,
    /// PKCS#8 Ed25519 key that signs checkpoints; generated if missing.
    pub signing_key: PathBuf,
    /// A new segment starts when the current one reaches this size.
    pub segment_bytes: u64,
    /// A checkpoint every this many records…
    pub checkpoint_every: u64,
    /// …or this often when records were written since the last one.
    pub checkpoint_interval: Duration,
    /// The largest batch made durable by one write.
    pub max_batch: usize,
}

#[derive(Debug, thiserror::Error)]
pub enum AuditError {
    #[error("the audit trail cannot be written")]
    Unavailable,
    #[error("audit trail in {dir}: {message}")]
    Open { dir: String, message: String },
}

/// What opening the trail found and repaired.
#[derive(Debug, Default, Clone)]
pub struct Recovery {
    pub last_seq: u64,
    /// Bytes cut from the end of the last segment (a write interrupted by a crash); they are
    /// kept beside it as `<segment>.torn-<offset>` for inspection.
    pub torn_bytes: u64,
    /// Records indexed during recovery (written but not yet indexed when the gateway stopped).
    pub reindexed: u64,
    pub checkpoints_checked: usize,
}

enum Msg {
    Append { record: Outgoing, reply: tokio::sync::oneshot::Sender<Result<u64, AuditError>> },
    Sync(tokio::sync::oneshot::Sender<()>),
}

/// An answer the writer owes a waiter.
enum Reply {
    Append(tokio::sync::oneshot::Sender<Result<u64, AuditError>>, Result<u64, AuditError>),
    Sync(tokio::sync::oneshot::Sender<()>),
}

impl Reply {
    fn send(self) {
        match self {
            Reply::Append(tx, r) => {
                let _ = tx.send(r);
            }
            Reply::Sync(tx) => {
                let _ = tx.send(());
            }
        }
    }
}

/// How the writer answers a batch's waiters.
///
/// Waking a task from outside the runtime costs a system call when the worker is parked, and on
/// a shared core the woken worker often preempts the writer at once, runs that one task, parks
/// again, and hands the core back: a wake-up and two context switches per record. So when the
/// trail is opened inside a runtime, the writer hands the whole batch to a task on that runtime
/// (one wake-up per batch), which answers each waiter from inside (no system call). Without a
/// runtime, or once it has gone, the writer answers directly. Answers therefore wait for the
/// runtime the trail was opened in to run: open it in the runtime that serves the calls (the
/// gateway does), not in a short-lived one kept alive but idle.
enum Replier {
    Direct,
    Runtime(tokio::sync::mpsc::UnboundedSender<Vec<Reply>>),
}

impl Replier {
    fn start() -> Self {
        let Ok(rt) = tokio::runtime::Handle::try_current() else { return Replier::Direct };
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<Vec<Reply>>();
        rt.spawn(async move {
            while let Some(batch) = rx.recv().await {
                batch.into_iter().for_each(Reply::send);
            }
        });
        Replier::Runtime(tx)
    }

    fn send(&self, batch: Vec<Reply>) {
        match self {
            Replier::Direct => batch.into_iter().for_each(Reply::send),
            Replier::Runtime(tx) => {
                if let Err(e) = tx.send(batch) {
                    e.0.into_iter().for_each(Reply::send);
                }
            }
        }
    }
}

/// Group commit that waits for the records it knows are coming.
///
/// Each durable write costs the core tens of microseconds whatever it carries, so under load the
/// batch size sets much of the cost per call. Left alone, a batch holds what arrived during the
/// previous commit. The data plane counts its calls that have started but not yet handed over
/// their record ([`AuditTrail::expect`]); when at least [`LINGER_SIBLINGS`] are on their way
/// and the previous batch held as many (the load is high, not a burst), the writer waits for
/// them, up to [`LINGER_MAX`], before writing (the idea of PostgreSQL's `commit_delay` and
/// `commit_siblings`). The last of them to hand over wakes it. At light and moderate load
/// batches hold a record or two, nothing waits, and each record is written as soon as it comes:
/// waiting there would only add to the latency of calls that no other call is sharing a commit
/// with. Under sustained open load, commits are paced instead ([`Pace`]).
#[derive(Debug)]
struct Gather {
    coming: AtomicUsize,
    lingering: AtomicBool,
    writer: OnceLock<std::thread::Thread>,
    /// The data plane's open connections, for paced commits (see [`Pace`]).
    connections: OnceLock<prometheus::IntGauge>,
    /// Records handed over and not yet taken into a commit.
    waiting: AtomicUsize,
    /// The writer waits for a paced batch: the record that makes one per open connection wakes it.
    pacing: AtomicBool,
}

/// Calls on their way at which the writer waits for them.
const LINGER_SIBLINGS: usize = 4;
/// The longest the writer waits for records on their way.
const LINGER_MAX: Duration = Duration::from_micros(250);

impl Gather {
    fn new() -> Self {
        Gather {
            coming: AtomicUsize::new(0),
            lingering: AtomicBool::new(false),
            writer: OnceLock::new(),
            connections: OnceLock::new(),
            waiting: AtomicUsize::new(0),
            pacing: AtomicBool::new(false),
        }
    }

    /// One call fewer on its way; wakes a waiting writer when none is left.
    fn arrived(&self) {
        if self.coming.fetch_sub(1, Ordering::SeqCst) == 1
            && self.lingering.load(Ordering::SeqCst)
            && let Some(w) = self.writer.get()
        {
            w.unpark();
        }
    }

    /// One more record handed over (counted before it is sent, so that the writer never takes
    /// away more than was counted); wakes a writer waiting for a paced batch when there is now
    /// one per open connection.
    fn handing_over(&self) {
        let n = self.waiting.fetch_add(1, Ordering::SeqCst) + 1;
        if self.pacing.load(Ordering::SeqCst)
            && self.all_waiting(n)
            && let Some(w) = self.writer.get()
        {
            w.unpark();
        }
    }

    /// The data plane's open connections (at least one), when the trail was told of them.
    fn open_connections(&self) -> Option<usize> {
        self.connections.get().map(|open| usize::try_from(open.get()).unwrap_or(0).max(1))
    }

    /// Whether `n` records waiting make one per open connection of the data plane.
    fn all_waiting(&self, n: usize) -> bool {
        self.open_connections().is_some_and(|open| n >= open)
    }

    /// Waits (writer thread), when the previous batch held `last_batch` ≥ [`LINGER_SIBLINGS`]
    /// records and at least as many calls are on their way, until they have all handed over
    /// their record or [`LINGER_MAX`] has passed. Returns whether it waited.
    fn linger(&self, last_batch: usize) -> bool {
        self.linger_at_most(last_batch, LINGER_MAX)
    }

    fn linger_at_most(&self, last_batch: usize, longest: Duration) -> bool {
        if last_batch < LINGER_SIBLINGS || self.coming.load(Ordering::SeqCst) < LINGER_SIBLINGS {
            return false;
        }
        let deadline = Instant::now() + longest;
        self.lingering.store(true, Ordering::SeqCst);
        while self.coming.load(Ordering::SeqCst) > 0 {
            let now = Instant::now();
            if now >= deadline {
                break;
            }
            std::thread::park_timeout(deadline - now);
        }
        self.lingering.store(false, Ordering::SeqCst);
        true
    }

    /// Gathers a paced batch (writer thread): takes what waits in `rx` into `batch` until
    /// `until`, or until the batch holds `max` or a record waits from every open connection
    /// (the record that makes it so wakes the writer). Returns whether it waited.
    fn paced(&self, rx: &mpsc::Receiver<Msg>, batch: &mut Vec<Msg>, until: Instant, max: usize) -> bool {
        let Some(open) = self.open_connections() else { return false };
        let mut until = until;
        let mut extended = false;
        let mut waited = false;
        self.pacing.store(true, Ordering::SeqCst);
        loop {
            drain(rx, batch, max);
            let waiting = self.waiting.load(Ordering::SeqCst);
            if batch.len() >= max || self.all_waiting(waiting) {
                break;
            }
            let mut now = Instant::now();
            if now >= until {
                // Out of time. Only when every open connection has a call on its way or waiting
                // (a closed loop) does the rest come within a call's time: wait for it, once.
                let busy = waiting + self.coming.load(Ordering::SeqCst);
                if extended || busy < open {
                    break;
                }
                extended = true;
                until = now + LINGER_MAX;
                now = Instant::now();
            }
            waited = true;
            std::thread::park_timeout(until.saturating_duration_since(now));
        }
        self.pacing.store(false, Ordering::SeqCst);
        drain(rx, batch, max);
        waited
    }

    /// The writer takes `batch` into a commit: its records no longer wait.
    fn taken(&self, batch: &[Msg]) {
        let n = batch.iter().filter(|m| matches!(m, Msg::Append { .. })).count();
        self.waiting.fetch_sub(n, Ordering::SeqCst);
    }
}

/// Paced group commits at sustained load.
///
/// Under open load (many callers, each sending when it wants, most connections idle between
/// calls) the records of calls do not come together: at 8,000 calls/s a commit started as soon
/// as a record waits holds one or two, and each costs the writer about 50 µs of the core and the
/// data plane a wake-up (`docs/operations.md`, "Paced commits"). So once records come at
/// [`PACE_FROM`] a second or more (a moving average over the commits), a commit starts no sooner
/// than [`PACE_INTERVAL`] after the previous one started, and holds what came meanwhile (four
/// records or more at that rate). The wait ends early once a record waits from every open
/// connection of the data plane, since no more can come before they are answered; and when the
/// interval is out while every open connection has a call on its way or waiting (a closed loop
/// of N connections, each sending its next call once the last is answered), it lasts up to
/// [`LINGER_MAX`] more for the rest of them, so that one commit answers them all.
/// Below that rate nothing is paced: a batch there would hold a record or two and the wait would
/// only add latency. The trail paces only when told how many connections are open
/// ([`AuditTrail::pace_by`]); without that (tools, tests) it commits as soon as a record waits.
struct Pace {
    /// Records a second, a moving average over commits.
    rate: f64,
    last_start: Option<Instant>,
}

/// The rate of records from which commits are paced: four records per [`PACE_INTERVAL`].
const PACE_FROM: f64 = 8_000.0;
/// The least time between the starts of two paced commits.
const PACE_INTERVAL: Duration = Duration::from_micros(500);

impl Pace {
    fn new() -> Self {
        Pace { rate: 0.0, last_start: None }
    }

    /// The earliest start of the next commit, when commits are paced.
    fn next_start(&self) -> Option<Instant> {
        let last = self.last_start?;
        (self.rate >= PACE_FROM).then_some(last + PACE_INTERVAL)
    }

    /// A commit of `records` starts `now`.
    fn started(&mut self, now: Instant, records: usize) {
        if let Some(last) = self.last_start {
            let gap = (now - last).as_secs_f64().max(1e-6);
            self.rate += (records as f64 / gap - self.rate) / 8.0;
        }
        self.last_start = Some(now);
    }
}

/// Moves what waits in `rx` into `batch`, up to `max` messages.
fn drain(rx: &mpsc::Receiver<Msg>, batch: &mut Vec<Msg>, max: usize) {
    while batch.len() < max {
        match rx.try_recv() {
            Ok(m) => batch.push(m),
            Err(_) => break,
        }
    }
}

/// A call on its way to an audit record: see [`AuditTrail::expect`].
#[derive(Debug)]
pub struct Coming {
    gather: Arc<Gather>,
}

impl Drop for Coming {
    fn drop(&mut self) {
        self.gather.arrived();
    }
}

/// Shared view of the writer's state.
#[derive(Debug, Default)]
pub struct TrailStatus {
    /// False while the last write failed.
    pub writable: AtomicBool,
    pub last_seq: AtomicU64,
    pub records: AtomicU64,
    pub batches: AtomicU64,
    /// Records handed to the indexer thread that it has not taken yet. A gateway writes at
    /// its calls' pace, which the indexer outruns; a writer faster than that (the trail
    /// generator) waits while this is high, or the records pile up in memory.
    pub index_queue: AtomicU64,
    /// Told the size of each durable batch and how long its durable write took (the
    /// metrics), when set.
    pub on_batch: std::sync::OnceLock<BatchObserver>,
}

/// Receives each durable batch's record count and commit time.
pub struct BatchObserver(pub Box<dyn Fn(usize, Duration) + Send + Sync>);

impl std::fmt::Debug for BatchObserver {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("BatchObserver")
    }
}

/// Handle to the trail; cheap to share.
#[derive(Debug)]
pub struct AuditTrail {
    tx: Mutex<Option<mpsc::Sender<Msg>>>,
    gather: Arc<Gather>,
    thread: Mutex<Option<JoinHandle<()>>>,
    indexer: Mutex<Option<JoinHandle<()>>>,
    /// Tells the indexer to stop after its current batch (the rest is caught up at start).
    indexer_stop: Arc<AtomicBool>,
    pub status: Arc<TrailStatus>,
    pub public_key: [u8; 32],
    pub dir: PathBuf,
}

struct Writer {
    cfg: TrailConfig,
    file: SegmentFile,
    seg_path: PathBuf,
    /// Durable length of the current segment.
    seg_len: u64,
    seg_first: u64,
    next_seq: u64,
    hash: [u8; 32],
    since_checkpoint: u64,
    last_checkpoint: Instant,
    /// The hash of the last checkpoint frame, which the next one signs (the checkpoint chain).
    last_cp_hash: [u8; 32],
    /// The length of `checkpoints.log` after its last complete checkpoint: a failed append is
    /// cut back to it, so nothing is ever appended after garbage.
    cp_len: u64,
    key: Ed25519KeyPair,
    broken: bool,
    /// Durable batches go to the indexer thread: index upkeep never delays durability.
    index_tx: Option<mpsc::Sender<Vec<IndexEntry>>>,
    /// The index keeps each record's payload (a shared store).
    index_payload: bool,
    status: Arc<TrailStatus>,
    /// The next segment, prepared in the background (see [`super::spare`]).
    spare: Arc<Spare>,
    spare_thread: Option<JoinHandle<()>>,
    replier: Replier,
    gather: Arc<Gather>,
    pace: Pace,
}

fn open_err(dir: &Path, message: impl Into<String>) -> AuditError {
    AuditError::Open { dir: dir.display().to_string(), message: message.into() }
}

fn now_ms() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64)
}

fn sync_dir(dir: &Path) -> std::io::Result<()> {
    File::open(dir)?.sync_all()
}

/// Loads the signing key, generating it (mode 0600) if the file does not exist.
/// The file beside the signing key that holds its public half, 64 hex digits (what a verifier
/// pins: `audit-signing.key` → `audit-signing.pub`).
pub fn public_key_file(signing_key: &Path) -> PathBuf {
    signing_key.with_extension("pub")
}

/// [`load_or_create_key`], then writes the public half beside it when it is not there.
pub fn load_key_and_publish(path: &Path) -> Result<Ed25519KeyPair, String> {
    let key = load_or_create_key(path)?;
    let public = public_key_file(path);
    if !public.exists() {
        std::fs::write(&public, format!("{}\n", format::hex(key.public_key().as_ref())))
            .map_err(|e| format!("cannot write {}: {e}", public.display()))?;
    }
    Ok(key)
}

pub fn load_or_create_key(path: &Path) -> Result<Ed25519KeyPair, String> {
    if !path.exists() {
        let rng = ring::rand::SystemRandom::new();
        let pkcs8 = Ed25519KeyPair::generate_pkcs8(&rng).map_err(|_| "cannot generate an Ed25519 key".to_owned())?;
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent).map_err(|e| e.to_string())?;
        }
        let mut opts = OpenOptions::new();
        opts.write(true).create_new(true);
        std::os::unix::fs::OpenOptionsExt::mode(&mut opts, 0o600);
        let mut f = opts.open(path).map_err(|e| format!("cannot create {}: {e}", path.display()))?;
        f.write_all(pkcs8.as_ref()).and_then(|()| f.sync_all()).map_err(|e| e.to_string())?;
        let key = Ed25519KeyPair::from_pkcs8(pkcs8.as_ref()).map_err(|e| e.to_string())?;
        let _ = std::fs::write(path.with_extension("pub"), format::hex(key.public_key().as_ref()) + "\n");
        return Ok(key);
    }
    let bytes = std::fs::read(path).map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    Ed25519KeyPair::from_pkcs8(&bytes).map_err(|e| format!("{} is not a PKCS#8 Ed25519 key: {e}", path.display()))
}

/// The public half of the PKCS#8 Ed25519 signing key at `path`: the key a verifier pins.
pub fn signing_public_key(path: &Path) -> Result<[u8; 32], String> {
    let bytes = std::fs::read(path).map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    let key = Ed25519KeyPair::from_pkcs8(&bytes)
        .map_err(|e| format!("{} is not a PKCS#8 Ed25519 key: {e}", path.display()))?;
    key.public_key().as_ref().try_into().map_err(|_| "bad public key".to_owned())
}

/// Reads `{"seq":N,` at the start of a record payload.
pub fn payload_seq(payload: &[u8]) -> Option<u64> {
    let rest = payload.strip_prefix(b"{\"seq\":")?;
    let end = rest.iter().position(|b| !b.is_ascii_digit())?;
    std::str::from_utf8(&rest[..end]).ok()?.parse().ok()
}

impl AuditTrail {
    /// Opens (or creates) the trail in `cfg.dir`, repairs a torn tail, re-verifies the chain
    /// of the last segment against the checkpoints, catches the index up, and starts the writer.
    pub fn open(cfg: TrailConfig, index: Arc<dyn AuditIndex>) -> Result<(Self, Recovery), AuditError> {
        let dir = cfg.dir.clone();
        std::fs::create_dir_all(&dir).map_err(|e| open_err(&dir, e.to_string()))?;
        let key = load_key_and_publish(&cfg.signing_key).map_err(|m| open_err(&dir, m))?;
        let public_key: [u8; 32] =
            key.public_key().as_ref().try_into().map_err(|_| open_err(&dir, "bad public key"))?;
        let mut recovery = Recovery::default();

        let mut segs = format::segments(&dir).map_err(|e| open_err(&dir, e.to_string()))?;
        if segs.is_empty() {
            let path = dir.join(format::segment_name(1));
            let mut f = OpenOptions::new()
                .write(true)
                .create_new(true)
                .open(&path)
                .map_err(|e| open_err(&dir, e.to_string()))?;
            f.write_all(&format::encode_header(1, &GENESIS))
                .and_then(|()| f.sync_all())
                .and_then(|()| sync_dir(&dir))
                .map_err(|e| open_err(&dir, e.to_string()))?;
            segs.push((1, path));
        }
        let (seg_first, seg_path) = segs.last().cloned().ok_or_else(|| open_err(&dir, "no segment"))?;
        let data = format::read_all(&seg_path).map_err(|e| open_err(&dir, e.to_string()))?;
        let header = format::decode_header(&data)
            .ok_or_else(|| open_err(&dir, format!("{} has no valid header", seg_path.display())))?;
        if header.first_seq != seg_first {
            return Err(open_err(
                &dir,
                format!("{}: header names first record {}", seg_path.display(), header.first_seq),
            ));
        }
        // Checkpoints first: a torn last checkpoint is moved aside, any other damage stops the
        // start without touching a byte; the chain of checkpoints must hold.
        let (stored, cp_len) = recover_checkpoints(&dir).map_err(|m| open_err(&dir, m))?;
        check_checkpoint_chain(&stored).map_err(|m| open_err(&dir, m))?;
        let sealed_to = stored.iter().map(|c| c.cp.seq).max().unwrap_or(0);
        let last_cp_hash = stored.last().map_or(GENESIS, |c| c.frame_hash);

        let (frames, stop) = format::decode_frames(&data, HEADER_LEN);
        // The durable length; a segment prepared in advance has zeros beyond it.
        let mut seg_len = format::frames_end(&frames, HEADER_LEN);
        if let Some(stop) = stop {
            let at = stop.offset();
            let torn_seq = seg_first + frames.len() as u64;
            let name = seg_path.file_name().and_then(|n| n.to_str()).unwrap_or("segment").to_owned();
            // Only a torn *last* frame, never sealed by a checkpoint, is a crash's doing.
            if !format::torn_last_frame(&data, &stop) {
                return Err(open_err(
                    &dir,
                    format!(
                        "{name}, offset {at}, record {torn_seq}: damaged, and records follow it; nothing was changed; run `passerelle audit verify`"
                    ),
                ));
            }
            if torn_seq <= sealed_to {
                return Err(open_err(
                    &dir,
                    format!(
                        "{name}, offset {at}, record {torn_seq}: damaged, but checkpoint at record {sealed_to} sealed it; nothing was changed"
                    ),
                ));
            }
            // A crash can leave the last write incomplete. Keep the cut bytes for inspection.
            let end = format::written_end(&data, at as usize);
            let torn = dir.join(format!("{name}.torn-{at}"));
            std::fs::write(&torn, &data[at as usize..end]).map_err(|e| open_err(&dir, e.to_string()))?;
            let f = OpenOptions::new().write(true).open(&seg_path).map_err(|e| open_err(&dir, e.to_string()))?;
            f.set_len(at).and_then(|()| f.sync_all()).map_err(|e| open_err(&dir, e.to_string()))?;
            recovery.torn_bytes = end as u64 - at;
            seg_len = at;
            tracing::warn!(segment = %seg_path.display(), offset = at, bytes = recovery.torn_bytes, kind = ?matches!(stop, FrameError::Corrupt { .. }), "cut an incomplete audit write from the end of the trail");
        }
        // Re-verify the chain of the last segment.
        let mut hash = header.prev_hash;
        let mut next_seq = seg_first;
        let mut hashes = Vec::with_capacity(frames.len());
        for f in &frames {
            let seq = payload_seq(&f.payload);
            if f.kind != KIND_RECORD || seq != Some(next_seq) || format::chain(&hash, &f.payload) != f.hash {
                return Err(open_err(
                    &dir,
                    format!("the trail is damaged at record {next_seq}; run `passerelle audit verify` before starting"),
                ));
            }
            hash = f.hash;
            hashes.push((next_seq, hash));
            next_seq += 1;
        }
        let last_seq = next_seq - 1;
        // Checkpoints must agree with the chain, and none may lie beyond its end.
        for cp in stored.iter().map(|c| &c.cp) {
            if cp.seq > last_seq {
                return Err(open_err(
                    &dir,
                    format!("checkpoint at record {} but the trail ends at {last_seq}: records were removed", cp.seq),
                ));
            }
            if cp.seq >= seg_first {
                let at = (cp.seq - seg_first) as usize;
                if hashes.get(at).map(|(_, h)| format::hex(h)) != Some(cp.hash.clone()) {
                    return Err(open_err(&dir, format!("checkpoint at record {} does not match the chain", cp.seq)));
                }
                recovery.checkpoints_checked += 1;
            }
        }
        recovery.last_seq = last_seq;

        // Catch the index up with records written but not indexed.
        let indexed = index.audit_indexed_seq().map_err(|e| open_err(&dir, e.to_string()))?;
        if indexed < last_seq {
            recovery.reindexed = reindex(&segs, indexed, index.as_ref()).map_err(|m| open_err(&dir, m))?;
        }

        let file = SegmentFile::open(&seg_path, seg_len).map_err(|e| open_err(&dir, e.to_string()))?;
        tracing::debug!(target: "passerelle::audit_trail", direct = file.direct(), "audit segment opened for appending");
        let (spare, spare_thread) = Spare::start(&dir, cfg.segment_bytes).map_err(|e| open_err(&dir, e.to_string()))?;
        let (index_tx, index_rx) = mpsc::channel::<Vec<IndexEntry>>();
        let indexer_stop = Arc::new(AtomicBool::new(false));
        let stop = indexer_stop.clone();
        let index_payload = index.wants_payload();
        let trail_dir = dir.clone();
        let status = Arc::new(TrailStatus::default());
        let queue = status.clone();
        let indexer = std::thread::Builder::new()
            .name("audit-indexer".into())
            .spawn(move || run_indexer(index.as_ref(), index_rx, &stop, &trail_dir, &queue))
            .map_err(|e| open_err(&dir, e.to_string()))?;
        let gather = Arc::new(Gather::new());
        status.writable.store(true, Ordering::Release);
        status.last_seq.store(last_seq, Ordering::Release);
        let writer = Writer {
            cfg: cfg.clone(),
            file,
            seg_path,
            seg_len,
            seg_first,
            next_seq,
            hash,
            // Records no checkpoint seals yet (a crash before the last one): the next
            // occasion, at the latest a clean stop, seals them.
            since_checkpoint: last_seq.saturating_sub(sealed_to),
            last_checkpoint: Instant::now(),
            last_cp_hash,
            cp_len,
            key,
            broken: false,
            index_tx: Some(index_tx),
            index_payload,
            status: status.clone(),
            spare,
            spare_thread: Some(spare_thread),
            replier: Replier::start(),
            gather: gather.clone(),
            pace: Pace::new(),
        };
        let (tx, rx) = mpsc::channel();
        let thread = std::thread::Builder::new()
            .name("audit-writer".into())
            .spawn(move || writer.run(rx))
            .map_err(|e| open_err(&dir, e.to_string()))?;
        let _ = gather.writer.set(thread.thread().clone());
        Ok((
            AuditTrail {
                tx: Mutex::new(Some(tx)),
                gather,
                thread: Mutex::new(Some(thread)),
                indexer: Mutex::new(Some(indexer)),
                indexer_stop,
                status,
                public_key,
                dir,
            },
            recovery,
        ))
    }

    /// Announces a call that will hand over a record: the writer may wait for it to fill a
    /// batch (see [`Gather`]). The call is counted until the guard is given to
    /// [`AuditTrail::append_coming`] or dropped.
    pub fn expect(&self) -> Coming {
        self.gather.coming.fetch_add(1, Ordering::SeqCst);
        Coming { gather: self.gather.clone() }
    }

    /// Paces group commits at sustained load by `open`, the data plane's count of open
    /// connections (see [`Pace`]). Set once; a trail never told commits as soon as a record waits.
    pub fn pace_by(&self, open: prometheus::IntGauge) {
        let _ = self.gather.connections.set(open);
    }

    /// [`AuditTrail::append`] for a call announced by [`AuditTrail::expect`], its record
    /// already written out (see [`super::record::View::outgoing`]).
    pub async fn append_coming(&self, record: Outgoing, coming: Coming) -> Result<u64, AuditError> {
        self.append_then(record, move || drop(coming)).await
    }

    /// Appends a record and waits until it is durable. Returns its sequence number.
    pub async fn append(&self, record: &Record) -> Result<u64, AuditError> {
        self.append_then(record.view().outgoing(), || ()).await
    }

    /// Appends a record, runs `handed_over` once the writer has it (or cannot), and waits until
    /// the record is durable.
    async fn append_then(&self, record: Outgoing, handed_over: impl FnOnce()) -> Result<u64, AuditError> {
        let (reply, rx) = tokio::sync::oneshot::channel();
        let sent = {
            let tx = self.tx.lock().map_err(|_| AuditError::Unavailable)?;
            let tx = tx.as_ref().ok_or(AuditError::Unavailable)?;
            self.gather.handing_over();
            tx.send(Msg::Append { record, reply }).map_err(|_| {
                self.gather.waiting.fetch_sub(1, Ordering::SeqCst);
                AuditError::Unavailable
            })
        };
        handed_over();
        sent?;
        rx.await.map_err(|_| AuditError::Unavailable)?
    }

    /// Waits until everything handed over so far has been processed.
    pub async fn sync(&self) {
        let (tx, rx) = tokio::sync::oneshot::channel();
        let sent = self.tx.lock().ok().and_then(|g| g.as_ref().map(|s| s.send(Msg::Sync(tx)).is_ok()));
        if sent == Some(true) {
            let _ = rx.await;
        }
    }

    /// Stops the writer after it has written what it holds and a final checkpoint, then the
    /// indexer after its current batch: a backlog is not worth holding a shutdown for, since the
    /// next start indexes whatever was not (the index records how far it got).
    pub fn close(&self) {
        if let Ok(mut tx) = self.tx.lock() {
            tx.take();
        }
        let join = |slot: &Mutex<Option<JoinHandle<()>>>| {
            let handle = slot.lock().ok().and_then(|mut t| t.take());
            if let Some(h) = handle {
                let _ = h.join();
            }
        };
        join(&self.thread);
        self.indexer_stop.store(true, Ordering::Release);
        join(&self.indexer);
    }

    /// Waits until everything written so far is indexed (for queries that must see it).
    pub fn wait_indexed(&self, index: &dyn AuditIndex, timeout: Duration) -> bool {
        self.wait_indexed_to(index, u64::MAX, timeout)
    }

    /// Waits until the records up to `seq` (or the last written, if earlier) are indexed: a
    /// query that reads the trail as it stood before its own record waits for no more than
    /// that (the indexer gathers records for a while before each update, so waiting for the
    /// query's own record would add that while to every query).
    pub fn wait_indexed_to(&self, index: &dyn AuditIndex, seq: u64, timeout: Duration) -> bool {
        let target = self.status.last_seq.load(Ordering::Acquire).min(seq);
        let indexer = self.indexer.lock().ok().and_then(|h| h.as_ref().map(|h| h.thread().clone()));
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            if index.audit_indexed_seq().is_ok_and(|s| s >= target) {
                return true;
            }
            // Whatever the indexer is gathering, it indexes now rather than at the end of its
            // window (asked again at each look, in case the records reached it after a wake-up).
            if let Some(t) = &indexer {
                t.unpark();
            }
            std::thread::sleep(Duration::from_millis(1));
        }
        false
    }
}

impl Drop for AuditTrail {
    fn drop(&mut self) {
        self.close();
    }
}

/// A checkpoint as `checkpoints.log` holds it.
#[derive(Debug, Clone)]
pub struct StoredCheckpoint {
    pub offset: u64,
    /// The frame's hash: the checkpoint chain (version 2), or the record chain hash (version 1).
    pub frame_hash: [u8; 32],
    /// The stored payload (what the frame hash covers).
    pub payload: Vec<u8>,
    pub cp: Checkpoint,
}

/// `checkpoints.log` as read: its checkpoints, its bytes, and where and how it stops when it
/// does not end cleanly after its last complete frame.
pub type CheckpointsRead = (Vec<StoredCheckpoint>, Vec<u8>, Option<FrameError>);

/// Reads `checkpoints.log` frame by frame; every frame read must be a checkpoint.
pub fn read_checkpoints_raw(dir: &Path) -> Result<CheckpointsRead, String> {
    let path = dir.join(format::CHECKPOINTS_FILE);
    if !path.exists() {
        return Ok((Vec::new(), Vec::new(), None));
    }
    let data = format::read_all(&path).map_err(|e| format!("{}: {e}", format::CHECKPOINTS_FILE))?;
    let (frames, stop) = format::decode_frames_strict(&data, 0);
    let mut out = Vec::with_capacity(frames.len());
    for f in frames {
        if f.kind != KIND_CHECKPOINT {
            return Err(format!("{}, offset {}: not a checkpoint frame", format::CHECKPOINTS_FILE, f.offset));
        }
        let cp = serde_json::from_slice(&f.payload)
            .map_err(|e| format!("{}, offset {}: unreadable checkpoint: {e}", format::CHECKPOINTS_FILE, f.offset))?;
        out.push(StoredCheckpoint { offset: f.offset, frame_hash: f.hash, payload: f.payload, cp });
    }
    Ok((out, data, stop))
}

/// Every checkpoint of `dir`, read strictly: any unreadable byte is an error naming its offset.
pub fn read_checkpoints(dir: &Path) -> Result<Vec<StoredCheckpoint>, String> {
    let (cps, _, stop) = read_checkpoints_raw(dir)?;
    match stop {
        None => Ok(cps),
        Some(stop) => Err(format!(
            "{}, offset {}: {}",
            format::CHECKPOINTS_FILE,
            stop.offset(),
            match stop {
                FrameError::Truncated { .. } => "cut short",
                FrameError::Corrupt { .. } => "damaged (checksum mismatch)",
            }
        )),
    }
}

/// At start: a torn last checkpoint (a crash while writing it) is moved aside to
/// `checkpoints.log.torn-<offset>`; any other damage is an error and nothing is changed.
/// Returns the checkpoints and the file's length.
fn recover_checkpoints(dir: &Path) -> Result<(Vec<StoredCheckpoint>, u64), String> {
    let (cps, data, stop) = read_checkpoints_raw(dir)?;
    let Some(stop) = stop else { return Ok((cps, data.len() as u64)) };
    let at = stop.offset();
    if !format::torn_last_frame(&data, &stop) {
        return Err(format!(
            "{}, offset {at}: damaged, and bytes follow it; nothing was changed; run `passerelle audit verify`",
            format::CHECKPOINTS_FILE
        ));
    }
    let path = dir.join(format::CHECKPOINTS_FILE);
    std::fs::write(dir.join(format!("{}.torn-{at}", format::CHECKPOINTS_FILE)), &data[at as usize..])
        .map_err(|e| e.to_string())?;
    let f = OpenOptions::new().write(true).open(&path).map_err(|e| e.to_string())?;
    f.set_len(at).and_then(|()| f.sync_all()).map_err(|e| e.to_string())?;
    tracing::warn!(offset = at, "cut an incomplete checkpoint from the end of checkpoints.log");
    Ok((cps, at))
}

/// The checkpoints form a chain: each version 2 checkpoint names the hash of the frame before
/// it (zeros for the first) and its frame hash is `SHA-256(prev ‖ payload)`; version 1
/// checkpoints (unchained) may only come before the first version 2 one; sequence numbers
/// never go back.
pub fn check_checkpoint_chain(cps: &[StoredCheckpoint]) -> Result<(), String> {
    let mut prev = GENESIS;
    let mut chained = false;
    let mut last_seq = 0;
    for (i, c) in cps.iter().enumerate() {
        let at = format!("{}, offset {}, checkpoint at record {}", format::CHECKPOINTS_FILE, c.offset, c.cp.seq);
        match c.cp.prev.as_deref() {
            Some(p) => {
                if p != format::hex(&prev) {
                    let why = if i == 0 {
                        "the first checkpoint must follow 64 zeros"
                    } else {
                        "a checkpoint before it was removed, inserted or reordered"
                    };
                    return Err(format!("{at}: does not follow the previous checkpoint ({why})"));
                }
                if format::checkpoint_chain(&prev, &c.payload) != c.frame_hash {
                    return Err(format!("{at}: its frame hash does not chain"));
                }
                chained = true;
            }
            None if chained => return Err(format!("{at}: an unchained (version 1) checkpoint after chained ones")),
            None => {}
        }
        if c.cp.seq < last_seq {
            return Err(format!("{at}: goes back from record {last_seq}"));
        }
        last_seq = c.cp.seq;
        prev = c.frame_hash;
    }
    Ok(())
}

/// Keeps the index up with the trail. The index can always be rebuilt from the trail, so a
/// failed update loses no record: the index is then behind, what arrives meanwhile is dropped
/// (it is durable in the trail), and the indexer catches up from the trail's segments, trying
/// again every second until the index answers (a shared store that comes back).
fn run_indexer(
    index: &dyn AuditIndex,
    rx: mpsc::Receiver<Vec<IndexEntry>>,
    stop: &AtomicBool,
    dir: &Path,
    status: &TrailStatus,
) {
    let mut behind = false;
    let mut caught_up_to = 0u64;
    let window = index.batch_window();
    loop {
        let mut entries = match rx.recv_timeout(Duration::from_secs(1)) {
            Ok(e) => e,
            Err(mpsc::RecvTimeoutError::Timeout) => Vec::new(),
            Err(mpsc::RecvTimeoutError::Disconnected) => break,
        };
        if stop.load(Ordering::Acquire) {
            break;
        }
        // Let the index's batch window pass, then take what queued up meanwhile: one wake-up
        // and one index update per window, rather than per group commit.
        // A query waiting for the index cuts the window short (`wait_indexed_to` unparks this
        // thread).
        if !entries.is_empty() && !window.is_zero() {
            std::thread::park_timeout(window);
        }
        while entries.len() < 16_384 {
            match rx.try_recv() {
                Ok(more) => entries.extend(more),
                Err(_) => break,
            }
        }
        status.index_queue.fetch_sub(entries.len() as u64, Ordering::Relaxed);
        if behind {
            match catch_up(dir, index) {
                Ok((n, last)) => {
                    tracing::info!(reindexed = n, "audit index caught up with the trail");
                    behind = false;
                    caught_up_to = last;
                }
                Err(e) => {
                    tracing::debug!(error = %e, "audit index still unavailable");
                    continue;
                }
            }
        }
        entries.retain(|e| e.seq > caught_up_to);
        if entries.is_empty() {
            continue;
        }
        if let Err(e) = index.audit_index(&entries) {
            tracing::warn!(error = %e, "audit index update failed; it catches up from the trail once it answers");
            behind = true;
        }
    }
    if let Err(e) = index.audit_flush() {
        tracing::warn!(error = %e, "audit index not written at close; it is rebuilt at the next start");
    }
}

/// Indexes what the trail in `dir` holds beyond the index; returns how many records and the
/// last sequence number now indexed.
fn catch_up(dir: &Path, index: &dyn AuditIndex) -> Result<(u64, u64), String> {
    let indexed = index.audit_indexed_seq().map_err(|e| e.to_string())?;
    let segs = format::segments(dir).map_err(|e| e.to_string())?;
    let n = reindex(&segs, indexed, index)?;
    Ok((n, index.audit_indexed_seq().map_err(|e| e.to_string())?))
}

fn reindex(segs: &[(u64, PathBuf)], indexed: u64, index: &dyn AuditIndex) -> Result<u64, String> {
    let payload = index.wants_payload();
    let mut n = 0;
    for (i, (first, path)) in segs.iter().enumerate() {
        let next_first = segs.get(i + 1).map_or(u64::MAX, |(f, _)| *f);
        if next_first <= indexed + 1 {
            continue;
        }
        let data = format::read_all(path).map_err(|e| e.to_string())?;
        let (frames, _) = format::decode_frames(&data, HEADER_LEN);
        let mut batch = Vec::new();
        for f in frames {
            let Some(seq) = payload_seq(&f.payload) else { continue };
            if seq <= indexed {
                continue;
            }
            let r: super::record::StoredRecord =
                serde_json::from_slice(&f.payload).map_err(|e| format!("record {seq}: {e}"))?;
            batch.push(IndexEntry {
                seq,
                segment: *first,
                offset: f.offset,
                time_ms: r.record.time_ms,
                keys: Keys::new(r.record.caller.as_deref(), r.record.subjects.iter().map(|s| (s.kind(), s.id()))),
                payload: payload.then(|| f.payload.clone()),
            });
        }
        n += batch.len() as u64;
        index.audit_index(&batch).map_err(|e| e.to_string())?;
    }
    Ok(n)
}

/// A batch (write, checkpoint, rotation) taking this long is logged at debug level.
const SLOW_BATCH: Duration = Duration::from_millis(10);

impl Writer {
    fn run(mut self, rx: mpsc::Receiver<Msg>) {
        let mut batch: Vec<Msg> = Vec::with_capacity(self.cfg.max_batch);
        let mut buf = Vec::with_capacity(1 << 20);
        let mut payload = Vec::with_capacity(1024);
        let mut last_batch = 0;
        loop {
            let max = self.cfg.max_batch;
            let paced = self.pace.next_start().is_some_and(|until| self.gather.paced(&rx, &mut batch, until, max));
            if batch.is_empty() {
                let wait = self.cfg.checkpoint_interval.saturating_sub(self.last_checkpoint.elapsed());
                match rx.recv_timeout(wait.max(Duration::from_millis(1))) {
                    Ok(m) => batch.push(m),
                    Err(mpsc::RecvTimeoutError::Timeout) => {
                        if self.since_checkpoint > 0 {
                            self.checkpoint();
                        } else {
                            self.last_checkpoint = Instant::now();
                        }
                        continue;
                    }
                    Err(mpsc::RecvTimeoutError::Disconnected) => break,
                }
            }
            drain(&rx, &mut batch, max);
            if !paced && batch.len() < max && self.gather.linger(last_batch) {
                drain(&rx, &mut batch, max);
            }
            self.gather.taken(&batch);
            let t0 = Instant::now();
            let records = batch.len();
            self.pace.started(t0, records);
            last_batch = records;
            self.commit(&mut batch, &mut buf, &mut payload);
            let t1 = Instant::now();
            if self.since_checkpoint >= self.cfg.checkpoint_every
                || (self.since_checkpoint > 0 && self.last_checkpoint.elapsed() >= self.cfg.checkpoint_interval)
            {
                self.checkpoint();
            }
            let t2 = Instant::now();
            if self.seg_len >= self.cfg.segment_bytes {
                self.rotate();
            }
            let t3 = Instant::now();
            // Every call in the batch waited this long: worth a line when it is unusual.
            if t3 - t0 >= SLOW_BATCH {
                tracing::debug!(
                    target: "passerelle::audit_trail",
                    records,
                    write_us = (t1 - t0).as_micros() as u64,
                    checkpoint_us = (t2 - t1).as_micros() as u64,
                    rotate_us = (t3 - t2).as_micros() as u64,
                    "slow audit batch"
                );
            }
        }
        if self.since_checkpoint > 0 {
            self.checkpoint();
        }
        self.index_tx.take();
        self.spare.close();
        if let Some(t) = self.spare_thread.take() {
            let _ = t.join();
        }
    }

    fn commit(&mut self, batch: &mut Vec<Msg>, buf: &mut Vec<u8>, payload: &mut Vec<u8>) {
        buf.clear();
        let mut seq = self.next_seq;
        let mut hash = self.hash;
        let mut entries = Vec::with_capacity(batch.len());
        for m in batch.iter_mut() {
            if let Msg::Append { record, .. } = m {
                with_seq(seq, record.canonical(), payload);
                hash = format::chain(&hash, payload);
                let offset = self.seg_len + buf.len() as u64;
                format::encode_frame(buf, KIND_RECORD, &hash, payload);
                entries.push(IndexEntry {
                    seq,
                    segment: self.seg_first,
                    offset,
                    time_ms: record.time_ms,
                    payload: self.index_payload.then(|| payload.clone()),
                    keys: std::mem::take(record).into_keys(),
                });
                seq += 1;
            }
        }
        let started = std::time::Instant::now();
        let written = if entries.is_empty() { Ok(()) } else { self.write_durable(buf) };
        match written {
            Ok(()) => {
                if let Some(observe) = self.status.on_batch.get() {
                    (observe.0)(entries.len(), started.elapsed());
                }
                let first = self.next_seq;
                self.next_seq = seq;
                self.hash = hash;
                self.seg_len += buf.len() as u64;
                self.spare.segment_filled(self.seg_len);
                self.since_checkpoint += entries.len() as u64;
                self.status.writable.store(true, Ordering::Release);
                self.status.last_seq.store(seq - 1, Ordering::Release);
                self.status.records.fetch_add(entries.len() as u64, Ordering::Relaxed);
                self.status.batches.fetch_add(1, Ordering::Relaxed);
                if let Some(tx) = &self.index_tx {
                    let n = entries.len() as u64;
                    self.status.index_queue.fetch_add(n, Ordering::Relaxed);
                    if tx.send(entries).is_err() {
                        // No indexer to take them (it stopped): nothing waits for it.
                        self.status.index_queue.fetch_sub(n, Ordering::Relaxed);
                    }
                }
                let mut s = first;
                let replies = batch
                    .drain(..)
                    .map(|m| match m {
                        Msg::Append { reply, .. } => {
                            s += 1;
                            Reply::Append(reply, Ok(s - 1))
                        }
                        Msg::Sync(reply) => Reply::Sync(reply),
                    })
                    .collect();
                self.replier.send(replies);
            }
            Err(e) => {
                if !self.broken {
                    tracing::error!(error = %e, "audit trail write failed; calls fail closed until it recovers");
                }
                self.broken = true;
                self.status.writable.store(false, Ordering::Release);
                let replies = batch
                    .drain(..)
                    .map(|m| match m {
                        Msg::Append { reply, .. } => Reply::Append(reply, Err(AuditError::Unavailable)),
                        Msg::Sync(reply) => Reply::Sync(reply),
                    })
                    .collect();
                self.replier.send(replies);
            }
        }
    }

    /// Writes `buf` at the durable end of the segment and syncs it. After any failure the
    /// file is cut back to its durable length before the next attempt.
    fn write_durable(&mut self, buf: &[u8]) -> std::io::Result<()> {
        if self.broken {
            let f = OpenOptions::new().write(true).open(&self.seg_path)?;
            f.set_len(self.seg_len)?;
            f.sync_all()?;
            self.file = SegmentFile::open(&self.seg_path, self.seg_len)?;
            self.broken = false;
            tracing::info!("audit trail writable again");
        }
        let r = self.file.append(self.seg_len, buf);
        if r.is_err() {
            let _ = self.file.set_len(self.seg_len);
        }
        r
    }

    fn checkpoint(&mut self) {
        let time_ms = now_ms();
        let seq = self.next_seq - 1;
        if seq == 0 {
            return;
        }
        let mut buf = Vec::with_capacity(512);
        let frame_hash = format::signed_checkpoint(&mut buf, &self.key, seq, &self.hash, time_ms, &self.last_cp_hash);
        let path = self.cfg.dir.join(format::CHECKPOINTS_FILE);
        let r = OpenOptions::new().create(true).write(true).truncate(false).open(&path).and_then(|f| {
            let written = f.write_all_at(&buf, self.cp_len).and_then(|()| f.sync_data());
            if written.is_err() {
                // Never leave a partial checkpoint for the next one to follow.
                let _ = f.set_len(self.cp_len);
            }
            written
        });
        match r {
            Ok(()) => {
                self.since_checkpoint = 0;
                self.last_checkpoint = Instant::now();
                self.last_cp_hash = frame_hash;
                self.cp_len += buf.len() as u64;
            }
            // Records are durable already; the checkpoint is retried at the next occasion.
            Err(e) => tracing::warn!(error = %e, "audit checkpoint could not be written"),
        }
    }

    fn rotate(&mut self) {
        let path = self.cfg.dir.join(format::segment_name(self.next_seq));
        let header = format::encode_header(self.next_seq, &self.hash);
        let prepared = self.spare.take().map(|spare| {
            spare::install(spare, &path, &header).inspect_err(|e| {
                let _ = std::fs::remove_file(spare);
                tracing::warn!(error = %e, "the prepared audit segment could not be used; creating one");
            })
        });
        let was_prepared = matches!(prepared, Some(Ok(_)));
        let r = match prepared {
            Some(Ok(())) => Ok(()),
            _ => OpenOptions::new().write(true).create_new(true).open(&path).and_then(|mut f| {
                f.write_all(&header)?;
                f.sync_all()
            }),
        }
        .and_then(|()| sync_dir(&self.cfg.dir))
        .and_then(|()| SegmentFile::open(&path, HEADER_LEN as u64));
        match r {
            Ok(f) => {
                tracing::debug!(
                    target: "passerelle::audit_index",
                    first = self.next_seq,
                    prepared = was_prepared,
                    "audit segment started"
                );
                self.spare.segment_filled(HEADER_LEN as u64);
                self.spare.request();
                self.checkpoint();
                self.file = f;
                self.seg_path = path;
                self.seg_first = self.next_seq;
                self.seg_len = HEADER_LEN as u64;
            }
            Err(e) => {
                let _ = std::fs::remove_file(&path);
                tracing::warn!(error = %e, "cannot start a new audit segment; the current one keeps growing");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn gather() -> Arc<Gather> {
        Arc::new(Gather::new())
    }

    fn announce(g: &Arc<Gather>, n: usize) -> Vec<Coming> {
        (0..n)
            .map(|_| {
                g.coming.fetch_add(1, Ordering::SeqCst);
                Coming { gather: g.clone() }
            })
            .collect()
    }

    #[test]
    fn few_calls_on_their_way_or_light_load_are_not_waited_for() {
        let g = gather();
        let _coming = announce(&g, LINGER_SIBLINGS - 1);
        assert!(!g.linger(LINGER_SIBLINGS * 4), "the writer waited for too few calls");
        let _more = announce(&g, 8);
        assert!(!g.linger(1), "the writer waited while the load was light (batches of one)");
    }

    #[test]
    fn the_last_call_handed_over_wakes_the_waiting_writer() {
        let g = gather();
        let coming = announce(&g, LINGER_SIBLINGS + 2);
        let waiter = {
            let g = g.clone();
            std::thread::spawn(move || {
                let _ = g.writer.set(std::thread::current());
                let start = Instant::now();
                (g.linger_at_most(LINGER_SIBLINGS, Duration::from_secs(60)), start.elapsed())
            })
        };
        while !g.lingering.load(Ordering::SeqCst) {
            std::thread::yield_now();
        }
        // Handed over one by one while the writer waits; the last one ends the wait (without
        // the wake-up it would last the whole minute).
        for c in coming {
            drop(c);
        }
        let (waited, took) = waiter.join().unwrap();
        assert!(waited);
        assert!(took < Duration::from_secs(30), "the writer was not woken: {took:?}");
        assert_eq!(g.coming.load(Ordering::SeqCst), 0);
        assert!(!g.lingering.load(Ordering::SeqCst));
    }

    #[test]
    fn commits_are_paced_only_from_four_records_an_interval() {
        let mut p = Pace::new();
        let t = Instant::now();
        assert!(p.next_start().is_none(), "paced before any commit");
        // 3,000 records a second: one record every 333 µs, never paced.
        for i in 1..200u32 {
            p.started(t + Duration::from_micros(333) * i, 1);
        }
        assert!(p.next_start().is_none(), "paced at {:.0} records/s", p.rate);
        // 12,000 a second: six records every 500 µs; the next commit waits for the interval.
        let t = t + Duration::from_secs(1);
        for i in 1..200u32 {
            p.started(t + PACE_INTERVAL * i, 6);
        }
        let last = t + PACE_INTERVAL * 199;
        assert!((11_000.0..13_000.0).contains(&p.rate), "estimated {:.0} records/s", p.rate);
        assert_eq!(p.next_start(), Some(last + PACE_INTERVAL));
        // Back to a trickle: the average follows within a few commits.
        for i in 1..30u32 {
            p.started(last + Duration::from_millis(2) * i, 1);
        }
        assert!(p.next_start().is_none(), "still paced at {:.0} records/s", p.rate);
    }

    /// A gather told of `open` connections of the data plane (commits may be paced).
    fn gather_for(open: i64) -> Arc<Gather> {
        let g = gather();
        let gauge = prometheus::IntGauge::new("open", "open connections").unwrap();
        gauge.set(open);
        let _ = g.connections.set(gauge);
        g
    }

    fn queued(n: usize) -> (mpsc::Sender<Msg>, mpsc::Receiver<Msg>) {
        let (tx, rx) = mpsc::channel();
        for _ in 0..n {
            tx.send(Msg::Sync(tokio::sync::oneshot::channel().0)).unwrap();
        }
        (tx, rx)
    }

    #[test]
    fn a_trail_not_told_the_open_connections_does_not_pace() {
        let g = gather();
        let (_tx, rx) = queued(1);
        let mut batch = Vec::new();
        assert!(!g.paced(&rx, &mut batch, Instant::now() + Duration::from_secs(60), 64));
        assert!(batch.is_empty());
    }

    #[test]
    fn a_paced_commit_waits_out_its_interval_for_more_records() {
        let g = gather_for(128);
        let (_tx, rx) = queued(3);
        let mut batch = Vec::new();
        let start = Instant::now();
        assert!(g.paced(&rx, &mut batch, start + PACE_INTERVAL, 64));
        assert!(start.elapsed() >= PACE_INTERVAL, "gave up early: {:?}", start.elapsed());
        assert_eq!(batch.len(), 3);
    }

    #[test]
    fn a_paced_commit_starts_once_every_open_connection_waits_for_it() {
        let g = gather_for(16);
        // A closed loop: 16 connections, each about to hand over its call's record.
        let (tx, rx) = queued(0);
        let waiter = {
            let g = g.clone();
            std::thread::spawn(move || {
                let _ = g.writer.set(std::thread::current());
                let mut batch = Vec::new();
                let start = Instant::now();
                let waited = g.paced(&rx, &mut batch, start + Duration::from_secs(60), 64);
                (waited, batch.len(), start.elapsed())
            })
        };
        while !g.pacing.load(Ordering::SeqCst) {
            std::thread::yield_now();
        }
        // One by one; the sixteenth wakes the writer (without it the wait lasts the minute).
        for _ in 0..16 {
            tx.send(Msg::Sync(tokio::sync::oneshot::channel().0)).unwrap();
            g.handing_over();
        }
        let (waited, records, took) = waiter.join().unwrap();
        assert!(waited);
        assert_eq!(records, 16);
        assert!(took < Duration::from_secs(30), "the writer was not woken: {took:?}");
        assert!(!g.pacing.load(Ordering::SeqCst));
    }

    #[test]
    fn a_paced_commit_out_of_time_waits_longer_only_for_a_closed_loop() {
        let g = gather_for(4);
        // Open load: 2 of 4 connections busy; the interval is out, the commit starts.
        let two = announce(&g, 2);
        let (_tx, rx) = queued(0);
        let mut batch = Vec::new();
        let start = Instant::now();
        assert!(!g.paced(&rx, &mut batch, start, 64), "waited with idle connections");
        // Every connection busy (3 calls on their way, 1 record waiting): up to LINGER_MAX more
        // for the rest (which never come here).
        let _three = (two, announce(&g, 1));
        let (tx, rx) = queued(0);
        tx.send(Msg::Sync(tokio::sync::oneshot::channel().0)).unwrap();
        g.handing_over();
        let start = Instant::now();
        assert!(g.paced(&rx, &mut batch, start, 64));
        let took = start.elapsed();
        assert!(took >= LINGER_MAX, "gave up early: {took:?}");
        assert!(took < Duration::from_secs(2), "held the writer: {took:?}");
        assert_eq!(batch.len(), 1);
    }

    #[test]
    fn a_paced_batch_full_before_its_time_does_not_wait() {
        let g = gather_for(128);
        let (_tx, rx) = queued(10);
        let mut batch = Vec::new();
        assert!(!g.paced(&rx, &mut batch, Instant::now() + Duration::from_secs(60), 8));
        assert_eq!(batch.len(), 8, "took more than the largest batch");
    }

    #[test]
    fn a_call_that_never_hands_over_holds_the_writer_no_longer_than_the_limit() {
        let g = gather();
        let _coming = announce(&g, LINGER_SIBLINGS);
        let start = Instant::now();
        assert!(g.linger(LINGER_SIBLINGS));
        let waited = start.elapsed();
        assert!(waited >= LINGER_MAX, "gave up early: {waited:?}");
        assert!(waited < Duration::from_secs(2), "held the writer: {waited:?}");
    }
}
