//! Helpers for the gateway's background disk work (audit index runs and merges, the next audit
//! segment): it must not take the CPU or the disk from calls in flight.
//!
//! Every call waits for the audit writer's `fdatasync` before its answer leaves, so what matters
//! is what background writes do to that `fdatasync`. Measured in a 10-minute hold at 15,348
//! calls/s (per-second p99 beside each second's background work): seconds while the next
//! segment was being filled had a median p99 of 5.3 ms against 3.1 ms with no background
//! write, and held 12 of the 14 seconds above 20 ms. The filler then wrote 256 KB slices each
//! followed by its own `fdatasync`. Sampling the writer's kernel stack showed where it waited:
//! each `fdatasync` of another file also writes that file's inode block and asks the device to
//! flush its cache, and the writer's own `fdatasync` queued behind them. Hence, here:
//!
//! - slices go to the disk with `sync_file_range` (data only: no inode write, no cache flush);
//!   the one `fdatasync` that makes the file durable is the caller's, at the end;
//! - the next segment's slices keep pace with the segment being written (see `audit::spare`),
//!   so that a record batch finds little ahead of it in the device's queue and its cache flush
//!   little to persist.
//!
//! The threads are not put in the idle I/O class: tried, it showed no gain in A/B runs, and
//! mq-deadline may hold an idle-class write until its ten-second aging.

use std::fs::File;
use std::io::Write as _;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

/// Moves the calling thread to `SCHED_IDLE`: it gets the CPU only when no other thread of the
/// machine wants it. Logs and carries on at normal priority where the system refuses.
pub(crate) fn idle_priority(what: &str) {
    use thread_priority::{
        NormalThreadSchedulePolicy, ThreadPriority, ThreadSchedulePolicy, set_thread_priority_and_policy,
        thread_native_id,
    };
    let idle = ThreadSchedulePolicy::Normal(NormalThreadSchedulePolicy::Idle);
    if let Err(e) = set_thread_priority_and_policy(thread_native_id(), ThreadPriority::Min, idle) {
        tracing::warn!(error = ?e, thread = what, "background work runs at normal priority (SCHED_IDLE refused)");
    }
}

/// Bytes handed to the disk at a time (see [`Paced`]).
pub(crate) const PACE: usize = 256 * 1024;

/// How long a [`Paced`] writer rests after each slice, in multiples of the slice's own time:
/// 3 keeps the work to at most a quarter of a core and of the disk.
const REST: u32 = 3;

/// The most of a slice's time that counts for its rest: a slow disk or a busy core never
/// turns into a rest longer than three times this.
const LONGEST_WORK: Duration = Duration::from_millis(50);

/// How often a gated writer looks again.
const GATE_POLL: Duration = Duration::from_millis(5);

/// The longest single rest: a writer asked to close notices within this.
const LONGEST_REST: Duration = Duration::from_millis(100);

/// A writer that hands each [`PACE`] bytes to the disk and waits for them before taking more,
/// so that the page cache never holds a burst of its dirty data for the kernel to flush in one
/// go in front of the audit writer.
///
/// After each slice (producing it, writing it) it rests [`REST`] times as long, then runs its
/// `between` work; or, when [`Paced::gate`] sets a condition, it writes no slice before the
/// condition allows it. The slices are written out, not made durable: the owner syncs the file
/// once at the end.
pub(crate) struct Paced<'a> {
    pub(crate) file: File,
    buf: Vec<u8>,
    pub(crate) written: u64,
    since: Instant,
    /// When set, a slice waits until this allows the bytes written once it is.
    gate: Option<&'a dyn Fn(u64) -> bool>,
    /// When set, the next slice fails: the work is abandoned (the gateway is closing).
    cancel: Option<&'a AtomicBool>,
    /// Run after each slice's rest: more urgent work that must not wait for the whole write.
    between: Option<&'a dyn Fn()>,
}

impl<'a> Paced<'a> {
    pub(crate) fn new(file: File, cancel: Option<&'a AtomicBool>) -> Self {
        Paced {
            file,
            buf: Vec::with_capacity(PACE + 64),
            written: 0,
            since: Instant::now(),
            gate: None,
            cancel,
            between: None,
        }
    }

    /// Runs `work` after each slice's rest.
    pub(crate) fn between(mut self, work: Option<&'a dyn Fn()>) -> Self {
        self.between = work;
        self
    }

    /// Instead of resting after each slice, waits before each until `allows(bytes)` holds for
    /// the bytes written once it is.
    pub(crate) fn gate(mut self, allows: &'a dyn Fn(u64) -> bool) -> Self {
        self.gate = Some(allows);
        self
    }

    pub(crate) fn push(&mut self, bytes: &[u8]) -> std::io::Result<()> {
        self.buf.extend_from_slice(bytes);
        if self.buf.len() >= PACE { self.slice() } else { Ok(()) }
    }

    fn cancelled(&self) -> bool {
        self.cancel.is_some_and(|c| c.load(Ordering::Acquire))
    }

    /// Writes what is buffered and waits until the disk has it, then rests.
    pub(crate) fn slice(&mut self) -> std::io::Result<()> {
        if let Some(allows) = self.gate {
            wait_for(allows, self.written + self.buf.len() as u64, self.cancel)?;
        } else if self.cancelled() {
            return Err(closing());
        }
        self.file.write_all(&self.buf)?;
        sys::write_out(&self.file, self.written, self.buf.len())?;
        self.written += self.buf.len() as u64;
        self.buf.clear();
        if self.gate.is_none() {
            // Bounded, so that a stalled disk or a busy core does not turn into minutes of rest.
            let until = Instant::now() + self.since.elapsed().min(LONGEST_WORK) * REST;
            while let Some(left) = until.checked_duration_since(Instant::now()).filter(|d| !d.is_zero()) {
                if self.cancelled() {
                    break;
                }
                std::thread::sleep(left.min(LONGEST_REST));
            }
        }
        if let Some(work) = self.between {
            work();
        }
        self.since = Instant::now();
        Ok(())
    }
}

/// Waits until `allows(bytes)` holds, looking again every [`GATE_POLL`]; fails with
/// `Interrupted` once `cancel` is set.
pub(crate) fn wait_for(allows: &dyn Fn(u64) -> bool, bytes: u64, cancel: Option<&AtomicBool>) -> std::io::Result<()> {
    let cancelled = || cancel.is_some_and(|c| c.load(Ordering::Acquire));
    while !allows(bytes) && !cancelled() {
        std::thread::sleep(GATE_POLL);
    }
    if cancelled() { Err(closing()) } else { Ok(()) }
}

fn closing() -> std::io::Error {
    std::io::Error::new(std::io::ErrorKind::Interrupted, "closing")
}

/// The Linux call the standard library does not offer. It takes only integers and a file
/// descriptor the caller's `File` keeps open.
#[cfg(target_os = "linux")]
#[allow(unsafe_code, reason = "a system call without a safe wrapper in std or rustix")]
mod sys {
    use std::fs::File;
    use std::os::fd::AsRawFd as _;

    /// Starts writeback of `len` bytes at `offset` and waits for it: the data reaches the
    /// device, without the inode write or cache flush an `fdatasync` adds.
    pub(super) fn write_out(file: &File, offset: u64, len: usize) -> std::io::Result<()> {
        let flags = libc::SYNC_FILE_RANGE_WAIT_BEFORE | libc::SYNC_FILE_RANGE_WRITE | libc::SYNC_FILE_RANGE_WAIT_AFTER;
        let (offset, len) = (offset as libc::off64_t, len as libc::off64_t);
        // SAFETY: integers and a descriptor owned by `file`, which outlives the call.
        let r = unsafe { libc::sync_file_range(file.as_raw_fd(), offset, len, flags) };
        if r == 0 { Ok(()) } else { Err(std::io::Error::last_os_error()) }
    }
}

/// Elsewhere: a plain `fdatasync` per slice.
#[cfg(not(target_os = "linux"))]
mod sys {
    pub(super) fn write_out(file: &std::fs::File, _offset: u64, _len: usize) -> std::io::Result<()> {
        file.sync_data()
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    /// A gated writer takes no slice before its gate allows it, and writes every byte.
    #[test]
    fn a_gated_writer_waits_for_its_gate() {
        let dir = tempfile::tempdir().unwrap();
        let file = File::create(dir.path().join("f")).unwrap();
        let allowed = std::sync::atomic::AtomicU64::new(2 * PACE as u64);
        std::thread::scope(|s| {
            let writer = s.spawn(|| {
                let gate = |bytes| bytes <= allowed.load(Ordering::Relaxed);
                let mut w = Paced::new(file, None).gate(&gate);
                for _ in 0..4 {
                    w.push(&[7u8; PACE]).unwrap();
                }
                w.written
            });
            std::thread::sleep(Duration::from_millis(200));
            // Two slices written; the third waits for its room.
            assert!(!writer.is_finished());
            assert_eq!(std::fs::metadata(dir.path().join("f")).unwrap().len(), 2 * PACE as u64);
            allowed.store(3 * PACE as u64, Ordering::Relaxed);
            std::thread::sleep(Duration::from_millis(100));
            assert!(!writer.is_finished());
            assert_eq!(std::fs::metadata(dir.path().join("f")).unwrap().len(), 3 * PACE as u64);
            allowed.store(4 * PACE as u64, Ordering::Relaxed);
            assert_eq!(writer.join().unwrap(), 4 * PACE as u64);
        });
        assert_eq!(std::fs::read(dir.path().join("f")).unwrap(), vec![7u8; 4 * PACE]);
    }

    /// A writer asked to close stops waiting at its gate within [`GATE_POLL`] and takes no
    /// more slices.
    #[test]
    fn a_cancelled_writer_stops_waiting_and_writing() {
        let dir = tempfile::tempdir().unwrap();
        let cancel = AtomicBool::new(false);
        let file = File::create(dir.path().join("g")).unwrap();
        // A gate that opens for one slice only.
        let gate = |bytes| bytes <= PACE as u64;
        let mut w = Paced::new(file, Some(&cancel)).gate(&gate);
        w.push(&[1u8; PACE]).unwrap();
        let started = Instant::now();
        std::thread::scope(|s| {
            s.spawn(|| {
                std::thread::sleep(Duration::from_millis(50));
                cancel.store(true, Ordering::Release);
            });
            let e = w.push(&[1u8; PACE]).unwrap_err();
            assert_eq!(e.kind(), std::io::ErrorKind::Interrupted);
        });
        assert!(started.elapsed() < Duration::from_secs(5), "{:?}", started.elapsed());
        assert_eq!(w.written, PACE as u64);
        assert_eq!(std::fs::metadata(dir.path().join("g")).unwrap().len(), PACE as u64);
    }
}
