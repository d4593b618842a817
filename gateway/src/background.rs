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
//! - slices are small ([`PACE`]) and spread out, so that a record batch finds little ahead of
//!   it in the device's queue and its cache flush little to persist;
//! - the threads run in the idle I/O class as well as under `SCHED_IDLE`.

use std::fs::File;
use std::io::Write as _;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

/// Moves the calling thread to `SCHED_IDLE` (it gets the CPU only when no other thread of the
/// machine wants it) and to the idle I/O class (the disk serves it when no one else is
/// waiting). Logs and carries on at normal priority where the system refuses.
pub(crate) fn idle_priority(what: &str) {
    use thread_priority::{
        NormalThreadSchedulePolicy, ThreadPriority, ThreadSchedulePolicy, set_thread_priority_and_policy,
        thread_native_id,
    };
    let idle = ThreadSchedulePolicy::Normal(NormalThreadSchedulePolicy::Idle);
    if let Err(e) = set_thread_priority_and_policy(thread_native_id(), ThreadPriority::Min, idle) {
        tracing::warn!(error = ?e, thread = what, "background work runs at normal priority (SCHED_IDLE refused)");
    }
    if let Err(e) = sys::io_idle() {
        tracing::warn!(error = %e, thread = what, "background work keeps its I/O priority (idle class refused)");
    }
}

/// Bytes handed to the disk at a time (see [`Paced`]).
pub(crate) const PACE: usize = 64 * 1024;

/// How long a [`Paced`] writer rests after each slice, in multiples of the slice's own time:
/// 3 keeps the work to at most a quarter of a core and of the disk.
const REST: u32 = 3;

/// The longest single rest: a writer asked to close notices within this.
const LONGEST_REST: Duration = Duration::from_millis(100);

/// A writer that hands each [`PACE`] bytes to the disk and waits for them before taking more,
/// so that the page cache never holds a burst of its dirty data for the kernel to flush in one
/// go in front of the audit writer.
///
/// After each slice (producing it, writing it) it rests [`REST`] times as long, or longer when
/// [`Paced::spread`] asks for the work to take a given time, then runs its `between` work. The
/// slices are written out, not made durable: the owner syncs the file once at the end.
pub(crate) struct Paced<'a> {
    pub(crate) file: File,
    buf: Vec<u8>,
    pub(crate) written: u64,
    since: Instant,
    began: Instant,
    /// Bytes expected in all and the time they should take.
    spread: Option<(u64, Duration)>,
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
            began: Instant::now(),
            spread: None,
            cancel,
            between: None,
        }
    }

    /// Runs `work` after each slice's rest.
    pub(crate) fn between(mut self, work: Option<&'a dyn Fn()>) -> Self {
        self.between = work;
        self
    }

    /// Spreads `total` bytes evenly over `over` (at least): slice k is not written before
    /// `k / slices` of that time has passed.
    pub(crate) fn spread(mut self, total: u64, over: Duration) -> Self {
        self.spread = Some((total.max(1), over));
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
        if self.cancelled() {
            return Err(std::io::Error::new(std::io::ErrorKind::Interrupted, "closing"));
        }
        self.file.write_all(&self.buf)?;
        sys::write_out(&self.file, self.written, self.buf.len())?;
        self.written += self.buf.len() as u64;
        self.buf.clear();
        // Bounded, so that a stalled disk does not turn into minutes of rest.
        let worked = self.since.elapsed().min(Duration::from_millis(50));
        let mut until = Instant::now() + worked * REST;
        if let Some((total, over)) = self.spread {
            let share = (self.written as f64 / total as f64).min(1.0);
            until = until.max(self.began + over.mul_f64(share));
        }
        while let Some(left) = until.checked_duration_since(Instant::now()).filter(|d| !d.is_zero()) {
            if self.cancelled() {
                break;
            }
            std::thread::sleep(left.min(LONGEST_REST));
        }
        if let Some(work) = self.between {
            work();
        }
        self.since = Instant::now();
        Ok(())
    }
}

/// The two Linux calls the standard library does not offer. Each takes only integers and a
/// file descriptor the caller's `File` keeps open.
#[cfg(target_os = "linux")]
#[allow(unsafe_code, reason = "two system calls without a safe wrapper in std or rustix")]
mod sys {
    use std::fs::File;
    use std::os::fd::AsRawFd as _;

    const IOPRIO_WHO_PROCESS: libc::c_int = 1;
    const IOPRIO_CLASS_IDLE: libc::c_int = 3;
    const IOPRIO_CLASS_SHIFT: u32 = 13;

    /// Starts writeback of `len` bytes at `offset` and waits for it: the data reaches the
    /// device, without the inode write or cache flush an `fdatasync` adds.
    pub(super) fn write_out(file: &File, offset: u64, len: usize) -> std::io::Result<()> {
        let flags = libc::SYNC_FILE_RANGE_WAIT_BEFORE | libc::SYNC_FILE_RANGE_WRITE | libc::SYNC_FILE_RANGE_WAIT_AFTER;
        let (offset, len) = (offset as libc::off64_t, len as libc::off64_t);
        // SAFETY: integers and a descriptor owned by `file`, which outlives the call.
        let r = unsafe { libc::sync_file_range(file.as_raw_fd(), offset, len, flags) };
        if r == 0 { Ok(()) } else { Err(std::io::Error::last_os_error()) }
    }

    /// Puts the calling thread (`who = 0`) in the idle I/O class.
    pub(super) fn io_idle() -> std::io::Result<()> {
        let prio = IOPRIO_CLASS_IDLE << IOPRIO_CLASS_SHIFT;
        // SAFETY: integer arguments only.
        let r = unsafe { libc::syscall(libc::SYS_ioprio_set, IOPRIO_WHO_PROCESS, 0, prio) };
        if r == 0 { Ok(()) } else { Err(std::io::Error::last_os_error()) }
    }

    /// The I/O class of thread `tid` (0: the calling thread; 3 is idle).
    #[cfg(test)]
    pub(crate) fn io_class(tid: i32) -> std::io::Result<i32> {
        // SAFETY: integer arguments only.
        let r = unsafe { libc::syscall(libc::SYS_ioprio_get, IOPRIO_WHO_PROCESS, tid) };
        if r < 0 { Err(std::io::Error::last_os_error()) } else { Ok((r as i32) >> IOPRIO_CLASS_SHIFT) }
    }
}

/// Elsewhere: a plain `fdatasync` per slice, and no I/O class.
#[cfg(not(target_os = "linux"))]
mod sys {
    pub(super) fn write_out(file: &std::fs::File, _offset: u64, _len: usize) -> std::io::Result<()> {
        file.sync_data()
    }

    pub(super) fn io_idle() -> std::io::Result<()> {
        Ok(())
    }
}

#[cfg(all(test, target_os = "linux"))]
pub(crate) use sys::io_class;

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    /// A spread write takes at least the time asked and writes every byte.
    #[test]
    fn spread_writes_take_their_time() {
        let dir = tempfile::tempdir().unwrap();
        let file = File::create(dir.path().join("f")).unwrap();
        let started = Instant::now();
        let mut w = Paced::new(file, None).spread(4 * PACE as u64, Duration::from_millis(200));
        for _ in 0..4 {
            w.push(&[7u8; PACE]).unwrap();
        }
        w.slice().unwrap();
        assert!(started.elapsed() >= Duration::from_millis(200), "{:?}", started.elapsed());
        assert_eq!(w.written, 4 * PACE as u64);
        assert_eq!(std::fs::read(dir.path().join("f")).unwrap(), vec![7u8; 4 * PACE]);
    }

    /// A writer asked to close ends its rest within [`LONGEST_REST`] and takes no more slices.
    #[test]
    fn a_cancelled_writer_stops_resting_and_writing() {
        let dir = tempfile::tempdir().unwrap();
        let cancel = AtomicBool::new(false);
        let file = File::create(dir.path().join("g")).unwrap();
        // One slice of a gigabyte spread over a thousand hours: a rest of about four minutes.
        let mut w = Paced::new(file, Some(&cancel)).spread(1 << 30, Duration::from_secs(3_600_000));
        let started = Instant::now();
        std::thread::scope(|s| {
            s.spawn(|| {
                std::thread::sleep(Duration::from_millis(50));
                cancel.store(true, Ordering::Release);
            });
            w.push(&[1u8; PACE]).unwrap();
        });
        assert!(started.elapsed() < Duration::from_secs(5), "{:?}", started.elapsed());
        let e = w.push(&[1u8; PACE]).unwrap_err();
        assert_eq!(e.kind(), std::io::ErrorKind::Interrupted);
        assert_eq!(w.written, PACE as u64);
    }

    /// The background threads' I/O class is idle (3).
    #[cfg(target_os = "linux")]
    #[test]
    fn idle_priority_sets_the_idle_io_class() {
        let class = std::thread::spawn(|| {
            idle_priority("test");
            io_class(0).unwrap()
        })
        .join()
        .unwrap();
        assert_eq!(class, 3);
    }
}
