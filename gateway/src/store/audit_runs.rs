//! The embedded store's audit index: sorted runs of fixed-size postings in files, merged in
//! the background (a small log-structured merge tree).
//!
//! Why not sled trees: every audit record added four entries to them (location, subject,
//! caller, time), and sled spent 46–160 µs of CPU per record on them (measured here, batches
//! of 4,096 down to 1), more than the whole rest of a call. Here a record adds three postings
//! (subject, caller, time), each carrying the location. The index is derived data — it can always be rebuilt
//! from the trail — so it needs no write-ahead log of its own, only sorted files:
//!
//! * New postings go to an in-memory table, queried by a scan.
//! * When the table holds `flush_records` records it is sealed (still queried by a scan) and
//!   handed to the upkeep thread, which sorts it and writes it as an immutable run
//!   `run-<first seq>-<last seq>.idx` (temp file, `fsync`, rename).
//! * When eight consecutive runs are of the same tier (their record counts round to the same
//!   power of eight) the upkeep thread merges them into one run, so a trail of `n` records has
//!   at most `7 · log₈(n / flush_records)` runs and each posting is rewritten `log₈` times.
//! * The upkeep thread runs under `SCHED_IDLE`: it gets the CPU only when no other thread of
//!   the machine wants it. A merge of 16 M postings is seconds of CPU; at normal priority, on a
//!   gateway with one core under 70 % load, it pushed the p99 of its minute from ~12 to 74 ms
//!   even when paced to a quarter of the core. A merge writes the tables sealed meanwhile
//!   between its slices. If upkeep still falls behind (a saturated core), runs and sealed
//!   tables accumulate; after [`MAX_SEALED`] sealed tables the thread that adds postings writes
//!   them itself, so memory stays bounded.
//! * A crash loses at most the in-memory tables (the open one and the sealed ones), and
//!   closing abandons a merge in progress: the durable runs say how far the index got
//!   ([`AuditIndex::audit_indexed_seq`]) and the trail's opening re-indexes the rest. A merge
//!   interrupted after its output was renamed leaves inputs whose ranges the output covers;
//!   opening removes them.
//!
//! A posting is 48 bytes: the first 16 bytes of SHA-256 over the key's kind and value, then
//! big-endian time, sequence number, segment and offset. Byte order is therefore (key, time,
//! seq) order. Two keys sharing a 128-bit hash prefix would only add a record to a query's
//! result, never hide one.
//!
//! A run file is its postings in that order, then its *fence*: the first 32 bytes (key, time,
//! seq) of every [`BLOCK`]th posting, then a trailer (postings and block size, big-endian `u64`
//! each, and [`MAGIC`]). The fence is held in memory (32 bytes for 1,024 postings: 9.4 MB at
//! 10⁸ records), so a lookup in a run is a binary search in memory and one read of one block
//! (48 KB) from the disk. A binary search on the disk read 20–27 postings a run, each in a page
//! of its own: on a trail of 10⁸ records (21 runs) with the page cache emptied, citizen reports
//! took 13.5 ms at the median and 166 ms at p99. A run without a fence (written before it
//! existed: its length a multiple of 48) is searched on the disk until the upkeep thread has
//! read its fence, a sample every block, at idle priority.

use std::collections::VecDeque;
use std::fs::{File, OpenOptions};
use std::os::unix::fs::FileExt as _;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::thread::JoinHandle;

use sha2::{Digest as _, Sha256};

use crate::background::Paced;

use crate::audit::index::{IndexEntry, Location, Selector};

const POSTING: usize = 48;
type Posting = [u8; POSTING];
/// Runs of the same tier merged at a time.
const FANOUT: usize = 8;
/// Postings read per `pread` while scanning a run.
const CHUNK: usize = 256;
/// Sealed tables (65,536 records, about 9 MB each) allowed to wait for the upkeep thread.
const MAX_SEALED: usize = 4;
/// Postings per block of a run's fence.
const BLOCK: u64 = 1_024;
/// The bytes of a posting the order is decided by (key, time, seq), as a fence holds them.
const KEY: usize = 32;
type FenceKey = [u8; KEY];
/// The end of a run file that has a fence.
const MAGIC: [u8; 8] = *b"PSLRUNF1";
const TRAILER: u64 = 24;

#[derive(Debug)]
struct Run {
    path: PathBuf,
    file: File,
    first_seq: u64,
    last_seq: u64,
    postings: u64,
    /// The first key of every block, once known.
    fence: std::sync::OnceLock<Fence>,
}

#[derive(Debug)]
struct Fence {
    block: u64,
    keys: Box<[FenceKey]>,
}

impl Run {
    fn records(&self) -> u64 {
        self.last_seq - self.first_seq + 1
    }

    fn read(&self, at: u64, buf: &mut [u8]) -> std::io::Result<()> {
        self.file.read_exact_at(buf, at * POSTING as u64)
    }

    /// Index of the first posting not below `probe`: by the fence and one block, or, for a run
    /// whose fence is not read yet, by a binary search on the disk.
    fn lower_bound(&self, probe: &FenceKey) -> std::io::Result<u64> {
        let Some(fence) = self.fence.get() else { return self.lower_bound_on_disk(probe) };
        // The fence's keys below `probe`: the bound lies past the first posting of the last of
        // their blocks, and no further than the next block's first.
        let below = fence.keys.partition_point(|k| k < probe) as u64;
        let Some(block) = below.checked_sub(1) else { return Ok(0) };
        let start = block * fence.block;
        let n = (self.postings - start).min(fence.block) as usize;
        let mut buf = vec![[0u8; POSTING]; n];
        self.read(start, buf.as_flattened_mut())?;
        Ok(start + buf.partition_point(|p| p[..KEY] < probe[..]) as u64)
    }

    fn lower_bound_on_disk(&self, probe: &FenceKey) -> std::io::Result<u64> {
        let (mut lo, mut hi) = (0, self.postings);
        let mut p = [0u8; POSTING];
        while lo < hi {
            let mid = lo + (hi - lo) / 2;
            self.read(mid, &mut p)?;
            if p[..32] < probe[..] {
                lo = mid + 1;
            } else {
                hi = mid;
            }
        }
        Ok(lo)
    }

    /// Postings with key `key` and time in `from..=to`, at most `limit`, appended to `out`.
    fn scan(&self, key: &[u8; 16], from: u64, to: u64, limit: usize, out: &mut Vec<Posting>) -> std::io::Result<()> {
        let mut at = self.lower_bound(&probe(key, from, 0))?;
        let mut buf = vec![0u8; CHUNK * POSTING];
        let mut taken = 0;
        while at < self.postings && taken < limit {
            let n = (self.postings - at).min(CHUNK as u64) as usize;
            self.read(at, &mut buf[..n * POSTING])?;
            for p in buf[..n * POSTING].chunks_exact(POSTING) {
                let p: &Posting = p.try_into().unwrap_or(&[0; POSTING]);
                if p[..16] != key[..] || time_of(p) > to {
                    return Ok(());
                }
                out.push(*p);
                taken += 1;
                if taken >= limit {
                    return Ok(());
                }
            }
            at += n as u64;
        }
        Ok(())
    }
}

/// A full table waiting to be written as a run (unsorted, as it filled).
#[derive(Debug)]
struct Sealed {
    first: u64,
    last: u64,
    postings: Arc<Vec<Posting>>,
}

#[derive(Debug, Default)]
struct Inner {
    /// Oldest first; their sequence ranges are consecutive.
    runs: Vec<Arc<Run>>,
    /// Tables waiting to be written, oldest first; they follow the runs.
    sealed: VecDeque<Sealed>,
    /// Postings not yet sealed, in arrival order; they follow the sealed tables.
    table: Vec<Posting>,
    /// The memory of the last table written as a run, emptied, for the next table to fill:
    /// a fresh table grows by doubling, copying what it holds at each step and taking every
    /// 4 KB of its megabytes as a page fault the kernel zeroes. Measured under `compare.py`'s
    /// closed loop, that zeroing was 40 % of the indexer thread's CPU.
    recycled: Vec<Posting>,
    table_first: u64,
    /// The highest sequence number indexed (in a run, a sealed table or the table).
    last_seq: u64,
    /// True while the upkeep thread merges.
    merging: bool,
    /// The caller last indexed and its key: calls come mostly in runs from one caller, whose
    /// key is then not hashed again for every record.
    caller_key: Option<(String, [u8; 16])>,
}

#[derive(Debug)]
struct Shared {
    dir: PathBuf,
    /// Records held in memory before they are written as a run.
    flush_records: AtomicU64,
    inner: Mutex<Inner>,
    /// Wakes the upkeep thread: a table was sealed, a run written, or the index closes.
    wake: Condvar,
    /// Held while sealed tables are written, so that runs are appended in sequence order; it
    /// holds the buffer a table is sorted in. The buffer is kept from one table to the next:
    /// a fresh one of a table's size (megabytes) would cost a page fault, and the kernel's
    /// zeroing of the page, every 4 KB of it, on the gateway's core. It holds postings as their
    /// [`order`]: sorted as integers, with no byte swaps in each comparison.
    writing: Mutex<Vec<Order>>,
    /// Set at close: the upkeep thread stops, abandoning a merge in progress.
    closing: AtomicBool,
}

/// The index; cheap to query from many threads while one thread adds to it and a background
/// thread writes and merges runs.
#[derive(Debug)]
pub struct RunIndex {
    shared: Arc<Shared>,
    upkeep: Option<JoinHandle<()>>,
}

fn be(v: u64) -> [u8; 8] {
    v.to_be_bytes()
}

/// A posting as [`order`] gives it.
type Order = (u128, u128, u128);

/// A posting as three big-endian integers: they order as its bytes do, compared in three
/// instructions rather than a call to `memcmp` (the upkeep thread's largest cost in sorts and
/// merges).
fn order(p: &Posting) -> Order {
    let word = |at: usize| {
        let mut w = [0u8; 16];
        w.copy_from_slice(&p[at..at + 16]);
        u128::from_be_bytes(w)
    };
    (word(0), word(16), word(32))
}

fn from_order((a, b, c): Order) -> Posting {
    let mut p = [0u8; POSTING];
    p[..16].copy_from_slice(&a.to_be_bytes());
    p[16..32].copy_from_slice(&b.to_be_bytes());
    p[32..].copy_from_slice(&c.to_be_bytes());
    p
}

fn time_of(p: &Posting) -> u64 {
    u64::from_be_bytes(p[16..24].try_into().unwrap_or_default())
}

fn field(p: &[u8], at: usize) -> u64 {
    u64::from_be_bytes(p[at..at + 8].try_into().unwrap_or_default())
}

fn key_hash(kind: u8, value: &str) -> [u8; 16] {
    let mut h = Sha256::new();
    h.update([kind, 0]);
    h.update(value.as_bytes());
    let d = h.finalize();
    let mut k = [0u8; 16];
    k.copy_from_slice(&d[..16]);
    k
}

const SUBJECT: u8 = b's';
const CALLER: u8 = b'c';
const TIME: u8 = b't';

/// The one key every record is indexed under by its time alone, hashed once.
static TIME_KEY: std::sync::LazyLock<[u8; 16]> = std::sync::LazyLock::new(|| key_hash(TIME, ""));

fn probe(key: &[u8; 16], time: u64, seq: u64) -> [u8; 32] {
    let mut p = [0u8; 32];
    p[..16].copy_from_slice(key);
    p[16..24].copy_from_slice(&be(time));
    p[24..].copy_from_slice(&be(seq));
    p
}

fn posting(key: &[u8; 16], e: &IndexEntry) -> Posting {
    let mut p = [0u8; POSTING];
    p[..32].copy_from_slice(&probe(key, e.time_ms, e.seq));
    p[32..40].copy_from_slice(&be(e.segment));
    p[40..].copy_from_slice(&be(e.offset));
    p
}

fn run_name(first: u64, last: u64) -> String {
    format!("run-{first:020}-{last:020}.idx")
}

fn parse_run_name(name: &str) -> Option<(u64, u64)> {
    let rest = name.strip_prefix("run-")?.strip_suffix(".idx")?;
    let (a, b) = rest.split_once('-')?;
    Some((a.parse().ok()?, b.parse().ok()?))
}

/// The tier of a run of `records` records: ⌊log₈(records / flush_records)⌋.
fn tier(records: u64, flush_records: u64) -> u32 {
    let mut t = 0;
    let mut size = flush_records.max(1) * FANOUT as u64;
    while records >= size {
        t += 1;
        size = size.saturating_mul(FANOUT as u64);
    }
    t
}

fn sync_dir(dir: &Path) -> std::io::Result<()> {
    File::open(dir)?.sync_all()
}

/// Writes `postings` (sorted) as the run `first..=last`: temp file written in paced slices,
/// fsync, rename, fsync dir. The run's length is what was written. Fails, leaving a temp file
/// that the next open removes, once `cancel` is set; runs `between` after each slice.
fn write_run(
    dir: &Path,
    first: u64,
    last: u64,
    postings: impl Iterator<Item = Posting>,
    cancel: Option<&AtomicBool>,
    between: Option<&dyn Fn()>,
) -> std::io::Result<Run> {
    let path = dir.join(run_name(first, last));
    let tmp = dir.join(format!("{}.tmp", run_name(first, last)));
    let file = OpenOptions::new().write(true).create(true).truncate(true).open(&tmp)?;
    let mut w = Paced::new(file, cancel).between(between);
    let (mut count, mut keys) = (0u64, Vec::new());
    for p in postings {
        if count % BLOCK == 0 {
            keys.push(fence_key(&p));
        }
        w.push(&p)?;
        count += 1;
    }
    for k in &keys {
        w.push(k)?;
    }
    w.push(&be(count))?;
    w.push(&be(BLOCK))?;
    w.push(&MAGIC)?;
    w.slice()?;
    w.file.sync_all()?;
    drop(w.file);
    std::fs::rename(&tmp, &path)?;
    sync_dir(dir)?;
    let file = File::open(&path)?;
    let fence = std::sync::OnceLock::from(Fence { block: BLOCK, keys: keys.into_boxed_slice() });
    Ok(Run { path, file, first_seq: first, last_seq: last, postings: count, fence })
}

fn fence_key(p: &Posting) -> FenceKey {
    let mut k = [0; KEY];
    k.copy_from_slice(&p[..KEY]);
    k
}

/// A run file's postings and, when it has one, its fence (read whole: 32 bytes for 1,024
/// postings). A file without a trailer is a run from before fences: postings only.
fn read_layout(path: &Path, file: &File) -> std::io::Result<(u64, Option<Fence>)> {
    let len = file.metadata()?.len();
    let not_ours = || std::io::Error::other(format!("{} is not a whole index run", path.display()));
    if len >= TRAILER {
        let mut t = [0u8; TRAILER as usize];
        file.read_exact_at(&mut t, len - TRAILER)?;
        if t[16..] == MAGIC {
            let (postings, block) = (field(&t, 0), field(&t, 8));
            let blocks = (block != 0).then(|| postings.div_ceil(block));
            let expected = blocks.and_then(|b| {
                postings.checked_mul(POSTING as u64)?.checked_add(b.checked_mul(KEY as u64)?)?.checked_add(TRAILER)
            });
            let (Some(blocks), true) = (blocks, expected == Some(len)) else { return Err(not_ours()) };
            let mut keys = vec![[0u8; KEY]; blocks as usize];
            file.read_exact_at(keys.as_flattened_mut(), postings * POSTING as u64)?;
            return Ok((postings, Some(Fence { block, keys: keys.into_boxed_slice() })));
        }
    }
    // Runs are renamed into place only when complete; anything else is not ours.
    if len % POSTING as u64 != 0 {
        return Err(not_ours());
    }
    Ok((len / POSTING as u64, None))
}

/// Bytes of a removed run freed at a time (see [`release_gradually`]).
const RELEASE: u64 = 16 << 20;

/// Frees the blocks and cached pages of removed runs a slice at a time, resting between
/// slices. Freed all at once when the last handle closes, the inputs of a large merge (hundreds
/// of MB) cost the kernel a burst of work on the gateway's core and a large journal commit that
/// the audit writer's `fdatasync` waited behind. A run a query still holds is left to close
/// with it. At close (`hurry`) the rest goes at once.
fn release_gradually(inputs: Vec<Arc<Run>>, writable: Vec<Option<File>>, hurry: &AtomicBool) {
    for (run, file) in inputs.into_iter().zip(writable) {
        let (Ok(run), Some(file)) = (Arc::try_unwrap(run), file) else { continue };
        let mut len = file.metadata().map_or(0, |m| m.len());
        while len > 0 && !hurry.load(Ordering::Acquire) {
            len = len.saturating_sub(RELEASE);
            if file.set_len(len).is_err() {
                break;
            }
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
        drop(run);
    }
}

impl RunIndex {
    /// Opens the index in `dir`, removing temp files and runs an interrupted merge left behind,
    /// and starts its upkeep thread.
    pub fn open(dir: &Path) -> std::io::Result<Self> {
        std::fs::create_dir_all(dir)?;
        let mut found = Vec::new();
        for e in std::fs::read_dir(dir)? {
            let e = e?;
            let name = e.file_name();
            let name = name.to_string_lossy();
            if name.ends_with(".tmp") {
                std::fs::remove_file(e.path())?;
            } else if let Some((first, last)) = parse_run_name(&name) {
                found.push((first, last, e.path()));
            }
        }
        // Widest first: a run inside a wider one is an input of a merge that completed.
        found.sort_by_key(|&(first, last, _)| (first, u64::MAX - last));
        let mut runs: Vec<Arc<Run>> = Vec::new();
        for (first, last, path) in found {
            if runs.last().is_some_and(|r| last <= r.last_seq) {
                std::fs::remove_file(&path)?;
                continue;
            }
            let file = File::open(&path)?;
            let (postings, fence) = read_layout(&path, &file)?;
            let fence = fence.map_or_else(std::sync::OnceLock::new, std::sync::OnceLock::from);
            runs.push(Arc::new(Run { path, file, first_seq: first, last_seq: last, postings, fence }));
        }
        let last_seq = runs.last().map_or(0, |r| r.last_seq);
        let shared = Arc::new(Shared {
            dir: dir.to_owned(),
            flush_records: AtomicU64::new(65_536),
            inner: Mutex::new(Inner { runs, last_seq, ..Inner::default() }),
            wake: Condvar::new(),
            writing: Mutex::new(Vec::new()),
            closing: AtomicBool::new(false),
        });
        let upkeep = {
            let shared = shared.clone();
            std::thread::Builder::new().name("index-upkeep".into()).spawn(move || shared.upkeep())?
        };
        Ok(RunIndex { shared, upkeep: Some(upkeep) })
    }

    /// Records held in memory before they are written as a run (65,536 unless changed).
    pub fn set_flush_records(&self, records: u64) {
        self.shared.flush_records.store(records.max(1), Ordering::Relaxed);
    }

    /// Adds the postings of `entries` (in sequence order). A full table is sealed for the upkeep
    /// thread; if too many wait already, this thread writes them.
    pub fn add(&self, entries: &[IndexEntry]) -> std::io::Result<()> {
        let flush_records = self.shared.flush_records.load(Ordering::Relaxed);
        let backlog = {
            let mut g = self.shared.lock();
            for e in entries {
                if e.seq <= g.last_seq {
                    continue;
                }
                if g.table.is_empty() {
                    g.table_first = e.seq;
                }
                for s in e.keys.subjects() {
                    g.table.push(posting(&key_hash(SUBJECT, s), e));
                }
                if let Some(c) = e.keys.caller() {
                    let key = match &g.caller_key {
                        Some((last, key)) if last == c => *key,
                        _ => {
                            let key = key_hash(CALLER, c);
                            g.caller_key = Some((c.to_owned(), key));
                            key
                        }
                    };
                    g.table.push(posting(&key, e));
                }
                g.table.push(posting(&TIME_KEY, e));
                g.last_seq = e.seq;
                if g.last_seq - g.table_first + 1 >= flush_records {
                    g.seal();
                    self.shared.wake.notify_all();
                }
            }
            g.sealed.len() > MAX_SEALED
        };
        if backlog { self.shared.write_sealed() } else { Ok(()) }
    }

    /// Writes the in-memory table and every sealed table as runs, on this thread. Merges stay
    /// with the upkeep thread.
    pub fn flush(&self) -> std::io::Result<()> {
        self.shared.lock().seal();
        self.shared.write_sealed()
    }

    /// The highest sequence number indexed.
    pub fn indexed_seq(&self) -> u64 {
        self.shared.lock().last_seq
    }

    /// Locations of records matching `selector` with time in `from..=to`, in (time, seq)
    /// order, at most `limit`.
    pub fn query(&self, selector: &Selector, from: u64, to: u64, limit: usize) -> std::io::Result<Vec<Location>> {
        let key = match selector {
            Selector::Subject(s) => key_hash(SUBJECT, s),
            Selector::Caller(c) => key_hash(CALLER, c),
            Selector::Time => *TIME_KEY,
        };
        let hit = |p: &&Posting| p[..16] == key[..] && (from..=to).contains(&time_of(p));
        let (runs, mut found) = {
            let g = self.shared.lock();
            let sealed = g.sealed.iter().flat_map(|s| s.postings.iter());
            let found: Vec<Posting> = sealed.chain(g.table.iter()).filter(hit).copied().collect();
            (g.runs.clone(), found)
        };
        for r in &runs {
            r.scan(&key, from, to, limit, &mut found)?;
        }
        found.sort_unstable_by_key(|p| (time_of(p), field(p, 24)));
        found.truncate(limit);
        Ok(found.iter().map(|p| Location { seq: field(p, 24), segment: field(p, 32), offset: field(p, 40) }).collect())
    }

    /// Runs on disk.
    pub fn run_count(&self) -> usize {
        self.shared.lock().runs.len()
    }

    /// Waits, at most `timeout`, until the upkeep thread has nothing left to do: every table
    /// written and every due merge done (merges are asynchronous; `audit generate` leaves the
    /// index as a gateway's upkeep would, and tests check the result). False on timeout.
    pub fn settle(&self, timeout: std::time::Duration) -> bool {
        let flush_records = self.shared.flush_records.load(Ordering::Relaxed);
        let deadline = std::time::Instant::now() + timeout;
        while std::time::Instant::now() < deadline {
            {
                let g = self.shared.lock();
                if g.sealed.is_empty() && !g.merging && due(&g, flush_records).is_none() {
                    return true;
                }
            }
            std::thread::sleep(std::time::Duration::from_millis(1));
        }
        false
    }
}

#[cfg(test)]
impl RunIndex {
    fn settle_or_panic(&self) {
        assert!(self.settle(std::time::Duration::from_secs(10)), "index upkeep did not settle");
    }
}

impl Inner {
    /// Moves the table, if it holds anything, to the sealed tables.
    fn seal(&mut self) {
        if !self.table.is_empty() {
            let postings = Arc::new(std::mem::replace(&mut self.table, std::mem::take(&mut self.recycled)));
            self.sealed.push_back(Sealed { first: self.table_first, last: self.last_seq, postings });
        }
    }
}

/// The oldest eight consecutive runs that share a tier, if any. Tiers never rise from older to
/// newer runs: new runs are of tier 0, and a merge turns the oldest eight of a tier into one of
/// the next, after runs of that tier or higher. (Merging the eight *newest* instead, as when
/// merges ran in line with the writes, would strand older runs of the tier behind the merged
/// one whenever runs arrive during a merge.)
fn due(g: &Inner, flush_records: u64) -> Option<Vec<Arc<Run>>> {
    g.runs
        .windows(FANOUT)
        .find(|w| {
            let t = tier(w[0].records(), flush_records);
            w.iter().all(|r| tier(r.records(), flush_records) == t)
        })
        .map(<[Arc<Run>]>::to_vec)
}

impl Shared {
    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// The upkeep thread: writes sealed tables and merges runs, at idle priority, until close.
    fn upkeep(&self) {
        crate::background::idle_priority("index-upkeep");
        self.read_fences();
        loop {
            {
                let mut g = self.lock();
                while !self.closing.load(Ordering::Acquire)
                    && g.sealed.is_empty()
                    && due(&g, self.flush_records.load(Ordering::Relaxed)).is_none()
                {
                    g = self.wake.wait(g).unwrap_or_else(std::sync::PoisonError::into_inner);
                }
            }
            if self.closing.load(Ordering::Acquire) {
                return;
            }
            if let Err(e) = self.write_sealed().and_then(|()| self.merge_due()) {
                if self.closing.load(Ordering::Acquire) {
                    return;
                }
                // The tables stay in memory and the runs as they are; try again shortly.
                tracing::warn!(target: "passerelle::audit_index", error = %e, "audit index upkeep failed; retrying");
                let g = self.lock();
                let _ = self.wake.wait_timeout(g, std::time::Duration::from_secs(1));
            }
        }
    }

    /// Reads the fence of every run written before fences, a posting every block, so that its
    /// lookups stop searching the disk. Such a run is searched on the disk meanwhile.
    fn read_fences(&self) {
        let runs = self.lock().runs.clone();
        for run in runs.iter().filter(|r| r.fence.get().is_none()) {
            let mut keys = Vec::with_capacity(run.postings.div_ceil(BLOCK) as usize);
            let mut p = [0u8; POSTING];
            for (i, at) in (0..run.postings).step_by(BLOCK as usize).enumerate() {
                if self.closing.load(Ordering::Acquire) {
                    return;
                }
                // Tens of seconds for a large index on a cold disk: tables that fill meanwhile
                // are written between samples, or the indexer would write them itself.
                if i % 4_096 == 4_095 && !self.lock().sealed.is_empty() {
                    if let Err(e) = self.write_sealed() {
                        tracing::warn!(target: "passerelle::audit_index", error = %e, "audit index table not written while fences are read");
                    }
                }
                if let Err(e) = run.read(at, &mut p) {
                    tracing::warn!(target: "passerelle::audit_index", error = %e, "index run's fence not read; it is searched on the disk");
                    break;
                }
                keys.push(fence_key(&p));
            }
            if keys.len() as u64 == run.postings.div_ceil(BLOCK) {
                let _ = run.fence.set(Fence { block: BLOCK, keys: keys.into_boxed_slice() });
            }
        }
    }

    /// Writes the sealed tables as runs, oldest first.
    fn write_sealed(&self) -> std::io::Result<()> {
        let mut sorted = self.writing.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        loop {
            let Some((first, last, postings)) =
                self.lock().sealed.front().map(|s| (s.first, s.last, s.postings.clone()))
            else {
                return Ok(());
            };
            let started = std::time::Instant::now();
            sorted.clear();
            sorted.extend(postings.iter().map(order));
            drop(postings);
            sorted.sort_unstable();
            let run = write_run(&self.dir, first, last, sorted.iter().copied().map(from_order), None, None)?;
            tracing::debug!(
                target: "passerelle::audit_index",
                first,
                last,
                postings = run.postings,
                ms = started.elapsed().as_millis() as u64,
                "index run written"
            );
            let mut g = self.lock();
            if let Some(written) = g.sealed.pop_front()
                && let Ok(mut table) = Arc::try_unwrap(written.postings)
                && g.recycled.capacity() < table.capacity()
            {
                table.clear();
                g.recycled = table;
            }
            g.runs.push(Arc::new(run));
            self.wake.notify_all();
        }
    }

    /// Merges runs while eight consecutive ones share a tier.
    fn merge_due(&self) -> std::io::Result<()> {
        loop {
            let inputs = {
                let mut g = self.lock();
                let Some(inputs) = due(&g, self.flush_records.load(Ordering::Relaxed)) else { return Ok(()) };
                g.merging = true;
                inputs
            };
            let started = std::time::Instant::now();
            let merged = self.merge(&inputs);
            let mut g = self.lock();
            g.merging = false;
            let run = merged?;
            tracing::debug!(
                target: "passerelle::audit_index",
                first = run.first_seq,
                last = run.last_seq,
                postings = run.postings,
                ms = started.elapsed().as_millis() as u64,
                "index runs merged"
            );
            // Runs written meanwhile follow the inputs; nothing else changes the list.
            let at = g.runs.iter().position(|r| Arc::ptr_eq(r, &inputs[0]));
            let Some(at) =
                at.filter(|&at| g.runs.get(at + FANOUT - 1).is_some_and(|r| Arc::ptr_eq(r, &inputs[FANOUT - 1])))
            else {
                return Err(std::io::Error::other("index runs changed during a merge"));
            };
            g.runs.splice(at..at + FANOUT, [Arc::new(run)]);
            drop(g);
            // Queries still holding an input keep reading it through its open file.
            let mut writable = Vec::with_capacity(inputs.len());
            for r in &inputs {
                writable.push(OpenOptions::new().write(true).open(&r.path).ok());
                std::fs::remove_file(&r.path)?;
            }
            sync_dir(&self.dir)?;
            release_gradually(inputs, writable, &self.closing);
        }
    }

    fn merge(&self, inputs: &[Arc<Run>]) -> std::io::Result<Run> {
        let first = inputs[0].first_seq;
        let last = inputs[inputs.len() - 1].last_seq;
        let count: u64 = inputs.iter().map(|r| r.postings).sum();
        let mut cursors: Vec<Cursor> = inputs.iter().map(|r| Cursor::new(r.clone())).collect::<Result<_, _>>()?;
        let mut heap = std::collections::BinaryHeap::new();
        for (i, c) in cursors.iter().enumerate() {
            if let Some(p) = c.peek() {
                heap.push(std::cmp::Reverse((order(&p), i)));
            }
        }
        let mut error = None;
        // The least posting is replaced in place by its run's next one: one sift down per
        // posting, where a pop and a push took two.
        let merged = std::iter::from_fn(|| {
            let mut top = heap.peek_mut()?;
            let std::cmp::Reverse((key, i)) = *top;
            match cursors[i].advance() {
                Ok(Some(next)) => *top = std::cmp::Reverse((order(&next), i)),
                Ok(None) => drop(std::collections::binary_heap::PeekMut::pop(top)),
                Err(e) => {
                    error = Some(e);
                    return None;
                }
            }
            Some(from_order(key))
        });
        // A merge of millions of postings takes tens of seconds at idle priority; tables that
        // fill meanwhile are written between its slices, or the indexer would have to write
        // them itself, at normal priority (a held load saw p99 reach 430 ms that way).
        let write_tables = || {
            if let Err(e) = self.write_sealed() {
                tracing::warn!(target: "passerelle::audit_index", error = %e, "audit index table not written during a merge");
            }
        };
        let run = write_run(&self.dir, first, last, merged, Some(&self.closing), Some(&write_tables));
        // A merged run that is not whole must not stay: at the next open it would cover, and
        // so replace, its inputs.
        let whole = match (error, run) {
            (None, Ok(run)) if run.postings == count => Ok(run),
            (Some(e), _) | (None, Err(e)) => Err(e),
            (None, Ok(run)) => {
                Err(std::io::Error::other(format!("merged index run has {} postings of {count}", run.postings)))
            }
        };
        if whole.is_err() {
            let _ = std::fs::remove_file(self.dir.join(run_name(first, last)));
        }
        whole
    }
}

impl Drop for RunIndex {
    fn drop(&mut self) {
        self.shared.closing.store(true, Ordering::Release);
        {
            let _g = self.shared.lock();
            self.shared.wake.notify_all();
        }
        if let Some(t) = self.upkeep.take() {
            let _ = t.join();
        }
        // Best effort: what is not written now is re-indexed from the trail at the next start.
        if let Err(e) = self.flush() {
            tracing::warn!(error = %e, "audit index table not written at close; it is rebuilt at the next start");
        }
    }
}

/// Sequential reader over a run, a chunk at a time.
struct Cursor {
    run: Arc<Run>,
    at: u64,
    buf: Vec<Posting>,
    pos: usize,
}

impl Cursor {
    fn new(run: Arc<Run>) -> std::io::Result<Self> {
        let mut c = Cursor { run, at: 0, buf: Vec::new(), pos: 0 };
        c.fill()?;
        Ok(c)
    }

    fn fill(&mut self) -> std::io::Result<()> {
        let n = (self.run.postings - self.at).min(CHUNK as u64 * 16) as usize;
        // Read straight into the cursor's buffer, which one run's merge reuses throughout.
        self.buf.resize(n, [0; POSTING]);
        self.run.read(self.at, self.buf.as_flattened_mut())?;
        self.at += n as u64;
        self.pos = 0;
        Ok(())
    }

    fn peek(&self) -> Option<Posting> {
        self.buf.get(self.pos).copied()
    }

    fn advance(&mut self) -> std::io::Result<Option<Posting>> {
        self.pos += 1;
        if self.pos >= self.buf.len() && self.at < self.run.postings {
            self.fill()?;
        }
        Ok(self.peek())
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use crate::audit::index::Keys;
    use crate::audit::record::SubjectKind;

    fn entry(seq: u64) -> IndexEntry {
        IndexEntry {
            seq,
            segment: 1 + seq / 1000 * 1000,
            offset: seq * 10,
            time_ms: 1_000 + seq / 2,
            keys: Keys::new(
                // Runs of four records from one caller, the callers taking turns.
                Some(&format!("c{}", seq / 4 % 3)),
                [(SubjectKind::Person, &*format!("{}", seq % 7))].into_iter(),
            ),
            payload: None,
        }
    }

    /// What a query must answer, computed from the entries directly.
    fn expected(n: u64, pick: impl Fn(&IndexEntry) -> bool, from: u64, to: u64, limit: usize) -> Vec<u64> {
        let mut v: Vec<(u64, u64)> = (1..=n)
            .map(entry)
            .filter(|e| pick(e) && (from..=to).contains(&e.time_ms))
            .map(|e| (e.time_ms, e.seq))
            .collect();
        v.sort_unstable();
        v.into_iter().take(limit).map(|(_, s)| s).collect()
    }

    fn seqs(locs: Vec<Location>) -> Vec<u64> {
        locs.into_iter().map(|l| l.seq).collect()
    }

    proptest::proptest! {
        /// Postings sort and merge by `order` exactly as by their bytes, and come back whole.
        #[test]
        fn order_is_the_bytes_order(
            a in proptest::array::uniform32(0u8..),
            b in proptest::array::uniform32(0u8..),
            tail_a in proptest::array::uniform16(0u8..),
            tail_b in proptest::array::uniform16(0u8..),
            same_head in proptest::bool::ANY,
        ) {
            let mut pa = [0u8; POSTING];
            let mut pb = [0u8; POSTING];
            pa[..32].copy_from_slice(&a);
            pa[32..].copy_from_slice(&tail_a);
            // Often equal in their first 32 bytes, so that the last word decides.
            pb[..32].copy_from_slice(if same_head { &a } else { &b });
            pb[32..].copy_from_slice(&tail_b);
            proptest::prop_assert_eq!(order(&pa).cmp(&order(&pb)), pa.cmp(&pb));
            proptest::prop_assert_eq!(from_order(order(&pa)), pa);
        }
    }

    #[test]
    fn queries_agree_with_a_scan_across_table_runs_and_merges() {
        let dir = tempfile::tempdir().unwrap();
        let n = 5_000;
        {
            let idx = RunIndex::open(dir.path()).unwrap();
            idx.set_flush_records(50);
            let mut seq = 1;
            while seq <= n {
                let batch: Vec<IndexEntry> = (seq..(seq + 37).min(n + 1)).map(entry).collect();
                idx.add(&batch).unwrap();
                seq += 37;
            }
            assert_eq!(idx.indexed_seq(), n);
            // Queries agree while the upkeep thread writes and merges (first pass) and after it
            // is done (second pass).
            for pass in 0..2 {
                if pass == 1 {
                    idx.settle_or_panic();
                    // 5,000 records in runs of ≥50: merges keep the count at a few dozen at most.
                    assert!(
                        idx.run_count() <= 7 * 3 + 1,
                        "{} runs: {:?}",
                        idx.run_count(),
                        idx.shared.lock().runs.iter().map(|r| r.records()).collect::<Vec<_>>()
                    );
                }
                assert_queries_agree(&idx, n);
            }
            let l = idx.query(&Selector::Subject("P5".into()), 0, u64::MAX, 1).unwrap()[0];
            assert_eq!((l.segment, l.offset), (entry(l.seq).segment, entry(l.seq).offset));
            // Dropping writes the table out.
        }
        let idx = RunIndex::open(dir.path()).unwrap();
        assert_eq!(idx.indexed_seq(), n);
        assert_eq!(
            seqs(idx.query(&Selector::Subject("P6".into()), 0, u64::MAX, 10_000).unwrap()),
            expected(n, |e| e.keys.subjects().next() == Some("P6"), 0, u64::MAX, 10_000)
        );
    }

    /// Queries by subject (one held, one not), caller and time, over ranges and with a limit,
    /// against what the entries say.
    fn assert_queries_agree(idx: &RunIndex, n: u64) {
        for (sel, pick) in [
            (
                Selector::Subject("P3".into()),
                Box::new(|e: &IndexEntry| e.keys.subjects().next() == Some("P3")) as Box<dyn Fn(&_) -> _>,
            ),
            (Selector::Subject("P0".into()), Box::new(|e: &IndexEntry| e.keys.subjects().next() == Some("P0"))),
            (Selector::Subject("P9".into()), Box::new(|_: &IndexEntry| false)),
            (Selector::Caller("c1".into()), Box::new(|e: &IndexEntry| e.keys.caller() == Some("c1"))),
            (Selector::Time, Box::new(|_: &IndexEntry| true)),
        ] {
            for (from, to, limit) in [(0, u64::MAX, 100_000), (1_500, 2_200, 100_000), (1_200, u64::MAX, 17)] {
                assert_eq!(seqs(idx.query(&sel, from, to, limit).unwrap()), expected(n, &pick, from, to, limit));
            }
        }
    }

    /// Runs of many blocks are searched by their fence and one block; a run written before
    /// fences (postings only) is searched on the disk and then by the fence the upkeep thread
    /// reads; a run whose trailer does not match its length is refused at open.
    #[test]
    fn lookups_by_the_fence_agree_with_the_disk_and_old_runs_still_answer() {
        let dir = tempfile::tempdir().unwrap();
        let n = 7_000;
        {
            let idx = RunIndex::open(dir.path()).unwrap();
            // 2,000 records a run: 6,000 postings, six blocks with keys across their edges.
            idx.set_flush_records(2_000);
            idx.add(&(1..=n).map(entry).collect::<Vec<_>>()).unwrap();
            idx.flush().unwrap();
            let runs = idx.shared.lock().runs.clone();
            assert_eq!(runs.len(), 4);
            for r in &runs {
                let fence = r.fence.get().unwrap(); // a run written now has its fence
                assert_eq!(fence.keys.len() as u64, r.postings.div_ceil(BLOCK));
                assert!(fence.keys.len() > 1 || r.postings <= BLOCK);
                // The fence's search finds what the disk's finds, for keys at and between
                // every block's edge.
                for b in 0..fence.keys.len() as u64 {
                    for at in [b * BLOCK, b * BLOCK + 1, (b * BLOCK).saturating_sub(1)] {
                        let mut p = [0u8; POSTING];
                        r.read(at.min(r.postings - 1), &mut p).unwrap();
                        let mut probe = fence_key(&p);
                        for k in [probe, {
                            probe[31] ^= 1;
                            probe
                        }] {
                            assert_eq!(r.lower_bound(&k).unwrap(), r.lower_bound_on_disk(&k).unwrap());
                        }
                    }
                }
                assert_eq!(r.lower_bound(&[0xff; KEY]).unwrap(), r.postings);
                assert_eq!(r.lower_bound(&[0; KEY]).unwrap(), 0);
            }
            assert_queries_agree(&idx, n);
        }
        // The oldest run as it was written before fences: its postings alone.
        let mut files: Vec<_> = std::fs::read_dir(dir.path()).unwrap().map(|e| e.unwrap().path()).collect();
        files.sort();
        let old = &files[0];
        let postings = {
            let f = File::open(old).unwrap();
            read_layout(old, &f).unwrap().0
        };
        OpenOptions::new().write(true).open(old).unwrap().set_len(postings * POSTING as u64).unwrap();
        let idx = RunIndex::open(dir.path()).unwrap();
        assert_queries_agree(&idx, n);
        let started = std::time::Instant::now();
        while idx.shared.lock().runs.iter().any(|r| r.fence.get().is_none()) {
            assert!(started.elapsed() < std::time::Duration::from_secs(30), "the old run's fence was never read");
            std::thread::sleep(std::time::Duration::from_millis(5));
        }
        assert_queries_agree(&idx, n);
        drop(idx);
        // A trailer that does not describe its file: refused, naming it.
        let damaged = &files[1];
        let f = OpenOptions::new().write(true).open(damaged).unwrap();
        let len = f.metadata().unwrap().len();
        f.write_all_at(&be(1), len - TRAILER).unwrap();
        let e = RunIndex::open(dir.path()).unwrap_err();
        assert!(e.to_string().contains(&*damaged.to_string_lossy()), "{e}");
    }

    #[test]
    fn an_interrupted_merge_leaves_no_duplicates() {
        let dir = tempfile::tempdir().unwrap();
        {
            let idx = RunIndex::open(dir.path()).unwrap();
            idx.set_flush_records(10);
            let batch: Vec<IndexEntry> = (1..=80).map(entry).collect();
            for c in batch.chunks(10) {
                idx.add(c).unwrap();
            }
            idx.settle_or_panic();
            assert_eq!(idx.run_count(), 1, "eight runs of tier 0 were merged");
        }
        // Put back two of the merge's inputs, as if the crash came before their removal, plus
        // a half-written temp file.
        let one = entry(1);
        write_run(dir.path(), 1, 10, std::iter::once(posting(&key_hash(TIME, ""), &one)), None, None).unwrap();
        write_run(dir.path(), 11, 20, std::iter::empty(), None, None).unwrap();
        std::fs::write(dir.path().join("run-x.idx.tmp"), b"partial").unwrap();
        let idx = RunIndex::open(dir.path()).unwrap();
        assert_eq!(idx.run_count(), 1);
        assert_eq!(seqs(idx.query(&Selector::Time, 0, u64::MAX, 1_000).unwrap()), (1..=80).collect::<Vec<_>>());
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1);
    }

    /// A table written as a run gives its memory to the table after next: the indexer fills
    /// memory it has already touched instead of growing a fresh table page by page.
    #[test]
    fn a_written_table_is_filled_again() {
        let dir = tempfile::tempdir().unwrap();
        let idx = RunIndex::open(dir.path()).unwrap();
        idx.set_flush_records(1_000);
        idx.add(&(1..=1_000).map(entry).collect::<Vec<_>>()).unwrap();
        let first = idx.shared.lock().sealed.front().map(|s| (s.postings.as_ptr() as usize, s.postings.capacity()));
        let (at, capacity) = first.unwrap();
        idx.settle_or_panic();
        // The second table fills while the first is written; at its seal the first's memory
        // becomes the table.
        idx.add(&(1_001..=2_000).map(entry).collect::<Vec<_>>()).unwrap();
        idx.add(&(2_001..=2_500).map(entry).collect::<Vec<_>>()).unwrap();
        let g = idx.shared.lock();
        assert_eq!(g.table.as_ptr() as usize, at, "the third table fills the first one's memory");
        assert_eq!(g.table.capacity(), capacity, "and has not grown");
        assert_eq!(g.table.len(), 500 * 3, "holding only its own postings");
        drop(g);
        idx.settle_or_panic();
        let found = idx.query(&Selector::Time, 0, u64::MAX, usize::MAX).unwrap();
        assert_eq!(found.len(), 2_500, "every record is still found once");
    }

    #[test]
    fn a_lost_table_is_reported_as_not_indexed() {
        let dir = tempfile::tempdir().unwrap();
        let idx = RunIndex::open(dir.path()).unwrap();
        idx.add(&(1..=30).map(entry).collect::<Vec<_>>()).unwrap();
        assert_eq!(idx.indexed_seq(), 30);
        // A crash: the table is gone without a flush.
        std::mem::forget(idx);
        let idx = RunIndex::open(dir.path()).unwrap();
        assert_eq!(idx.indexed_seq(), 0, "the trail's opening re-indexes from here");
    }

    /// Index upkeep must not compete with the data plane for the CPU: its thread runs under
    /// `SCHED_IDLE` (policy 5 in `/proc/<tid>/stat`). Other tests' upkeep threads may be just
    /// starting, so one at policy 5 within a second is what is asked.
    #[test]
    fn upkeep_runs_at_idle_priority() {
        let dir = tempfile::tempdir().unwrap();
        let _idx = RunIndex::open(dir.path()).unwrap();
        let mut seen = Vec::new();
        for _ in 0..1_000 {
            for task in std::fs::read_dir("/proc/self/task").unwrap() {
                let task = task.unwrap().path();
                let Ok(comm) = std::fs::read_to_string(task.join("comm")) else { continue };
                let Ok(stat) = std::fs::read_to_string(task.join("stat")) else { continue };
                if comm.trim() != "index-upkeep" {
                    continue;
                }
                // Fields after the parenthesised name start at field 3; the policy is field 41.
                let rest = &stat[stat.rfind(')').unwrap() + 2..];
                let policy: u32 = rest.split(' ').nth(41 - 3).unwrap().parse().unwrap();
                if policy == 5 {
                    return;
                }
                seen.push(policy);
            }
            std::thread::sleep(std::time::Duration::from_millis(1));
        }
        panic!("no index upkeep thread at SCHED_IDLE; policies seen: {seen:?}");
    }
}
