//! Helpers for the gateway's background disk work (audit index runs and merges, the next audit
//! segment): it must not take the CPU or the disk from calls in flight.

use std::fs::File;
use std::io::Write as _;
use std::sync::atomic::{AtomicBool, Ordering};

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

/// A writer that pushes each [`PACE`] bytes to the disk and waits for them before taking
/// more. An index run is megabytes (a merge, tens of them); written then synced in one go, it
/// held the audit writer's `fdatasync` — which shares the disk — for the whole flush, and every
/// call waiting on that batch with it. In slices, a record batch waits for one slice at most.
///
/// After each slice (producing it, writing it, syncing it) it rests [`REST`] times as long, so
/// that the disk has room for the audit writer in between, then runs its `between` work.
pub(crate) struct Paced<'a> {
    pub(crate) file: File,
    buf: Vec<u8>,
    pub(crate) written: u64,
    since: std::time::Instant,
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
            since: std::time::Instant::now(),
            cancel,
            between: None,
        }
    }

    /// Runs `work` after each slice's rest.
    pub(crate) fn between(mut self, work: Option<&'a dyn Fn()>) -> Self {
        self.between = work;
        self
    }

    pub(crate) fn push(&mut self, bytes: &[u8]) -> std::io::Result<()> {
        self.buf.extend_from_slice(bytes);
        if self.buf.len() >= PACE { self.slice() } else { Ok(()) }
    }

    /// Writes and syncs what is buffered, then rests.
    pub(crate) fn slice(&mut self) -> std::io::Result<()> {
        if self.cancel.is_some_and(|c| c.load(Ordering::Acquire)) {
            return Err(std::io::Error::new(std::io::ErrorKind::Interrupted, "closing"));
        }
        self.file.write_all(&self.buf)?;
        self.file.sync_data()?;
        self.written += self.buf.len() as u64;
        self.buf.clear();
        // Bounded, so that a stalled disk does not turn into minutes of rest.
        let worked = self.since.elapsed().min(std::time::Duration::from_millis(50));
        std::thread::sleep(worked * REST);
        if let Some(work) = self.between {
            work();
        }
        self.since = std::time::Instant::now();
        Ok(())
    }
}
