//! The next audit segment, prepared ahead of time: a file of zeros, written and synced in the
//! background, that the writer turns into its next segment at rotation.
//!
//! Why: an `fdatasync` that extends a file must also write the file's new size and block map,
//! while one that overwrites blocks already written writes little more than the data. Measured
//! on this machine's ext4 (1 KB writes, each followed by `fdatasync`): 131–140 µs median when
//! appending, 87–88 µs when overwriting a file written before. Every call waits for one of these
//! before its answer leaves, so segments are filled in place (as PostgreSQL does with its WAL
//! segments).
//!
//! The zeros are ordinary data, not a hole or an unwritten extent (those would bring the
//! metadata back on the first write). Readers stop at a tail of zeros ([`super::format`]). The
//! file is prepared under `SCHED_IDLE`, in slices that keep pace with the segment being written:
//! it may be ahead by twice what that segment holds, so it is complete when the segment is half
//! full whatever the rate, and the disk sees it as a trickle ([`crate::background`] says why).
//! The zeros go to the disk with direct writes, not through the page cache
//! ([`Spare::prepare_direct`]). It takes neither the CPU nor the disk from calls. It is asked for when a segment starts, and
//! a rotation that finds it not ready (or its preparation failed, e.g. on a full disk) creates
//! the segment the plain way.

use std::fs::OpenOptions;
use std::os::unix::fs::{FileExt as _, OpenOptionsExt as _};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::thread::JoinHandle;

use super::format::BLOCK;
use crate::background::{self, PACE, Paced};

/// The prepared file's name in the trail directory (not a segment name, so readers skip it).
pub const SPARE_NAME: &str = "next-segment.spare";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    Idle,
    Wanted,
    Ready,
}

/// The spare segment and the thread that prepares it.
#[derive(Debug)]
pub(crate) struct Spare {
    path: PathBuf,
    size: u64,
    state: Mutex<State>,
    wake: Condvar,
    closing: AtomicBool,
    /// Bytes in the segment being written, published by the writer after each batch.
    filled: AtomicU64,
}

impl Spare {
    /// Removes a spare left by an earlier run and starts the preparing thread.
    pub(crate) fn start(dir: &Path, size: u64) -> std::io::Result<(Arc<Spare>, JoinHandle<()>)> {
        let path = dir.join(SPARE_NAME);
        match std::fs::remove_file(&path) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => return Err(e),
            _ => {}
        }
        let spare = Arc::new(Spare {
            path,
            size,
            state: Mutex::new(State::Idle),
            wake: Condvar::new(),
            closing: AtomicBool::new(false),
            filled: AtomicU64::new(0),
        });
        let s = spare.clone();
        let thread = std::thread::Builder::new().name("audit-spare".into()).spawn(move || s.run())?;
        Ok((spare, thread))
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// The state, for the audit writer: never waits. The preparing thread runs at idle
    /// priority and may be preempted while it holds the lock; the writer, which every call
    /// waits for, must not wait for it (it then goes without a spare this time).
    fn try_lock(&self) -> Option<std::sync::MutexGuard<'_, State>> {
        match self.state.try_lock() {
            Ok(g) => Some(g),
            Err(std::sync::TryLockError::Poisoned(p)) => Some(p.into_inner()),
            Err(std::sync::TryLockError::WouldBlock) => None,
        }
    }

    /// Asks for a spare unless one is ready or being prepared.
    pub(crate) fn request(&self) {
        if let Some(mut s) = self.try_lock()
            && *s == State::Idle
        {
            *s = State::Wanted;
            self.wake.notify_all();
        }
    }

    /// The segment being written now holds `bytes` (the writer, after each batch: one store).
    pub(crate) fn segment_filled(&self, bytes: u64) {
        self.filled.store(bytes, Ordering::Relaxed);
    }

    /// Whether the spare may hold `bytes`: twice what the segment being written holds.
    fn may_hold(&self, bytes: u64) -> bool {
        bytes <= self.filled.load(Ordering::Relaxed).saturating_mul(2)
    }

    /// The prepared file, if it is ready; the caller now owns it.
    pub(crate) fn take(&self) -> Option<&Path> {
        let mut s = self.try_lock()?;
        (*s == State::Ready).then(|| {
            *s = State::Idle;
            self.path.as_path()
        })
    }

    /// Stops the preparing thread (a preparation in progress is abandoned).
    pub(crate) fn close(&self) {
        self.closing.store(true, Ordering::Release);
        let _s = self.lock();
        self.wake.notify_all();
    }

    fn run(&self) {
        crate::background::idle_priority("audit-spare");
        loop {
            {
                let mut s = self.lock();
                loop {
                    if self.closing.load(Ordering::Acquire) {
                        return;
                    }
                    if *s == State::Wanted {
                        break;
                    }
                    s = self.wake.wait(s).unwrap_or_else(std::sync::PoisonError::into_inner);
                }
            }
            let started = std::time::Instant::now();
            let made = self.prepare();
            let mut s = self.lock();
            match made {
                Ok(()) => {
                    tracing::debug!(ms = started.elapsed().as_millis() as u64, "next audit segment prepared");
                    *s = State::Ready;
                }
                Err(e) => {
                    let _ = std::fs::remove_file(&self.path);
                    *s = State::Idle;
                    if !self.closing.load(Ordering::Acquire) {
                        tracing::warn!(error = %e, "next audit segment not prepared; it will be created at rotation");
                    }
                }
            }
        }
    }

    fn prepare(&self) -> std::io::Result<()> {
        let mut direct = OpenOptions::new();
        direct.write(true).create(true).truncate(true).custom_flags(libc::O_DIRECT);
        match direct.open(&self.path) {
            Ok(file) => self.prepare_direct(file),
            Err(e) if e.raw_os_error() == Some(libc::EINVAL) => self.prepare_buffered(),
            Err(e) => Err(e),
        }
        .and_then(|file| file.sync_all())
    }

    /// Zeros written straight from memory to the disk, whole blocks at a time (the file is
    /// rounded up to a block: a segment may end in zeros). Through the page cache, the kernel
    /// copied every byte into a page, then wrote the page back: under `compare.py`'s closed
    /// loop that was 0.4–0.7 µs of the core per call, and 64 MB of cached zeros per segment.
    /// A direct write is on the device when it returns, so the slices need no write-out; the
    /// one `fsync` at the end flushes the device's cache.
    fn prepare_direct(&self, file: std::fs::File) -> std::io::Result<std::fs::File> {
        let len = self.size.next_multiple_of(BLOCK as u64);
        let mem = vec![0u8; PACE + BLOCK];
        let skip = mem.as_ptr().align_offset(BLOCK);
        let zeros = &mem[skip..skip + PACE];
        let mut at = 0;
        while at < len {
            let n = (len - at).min(PACE as u64);
            background::wait_for(&|bytes| self.may_hold(bytes), at + n, Some(&self.closing))?;
            match file.write_all_at(&zeros[..n as usize], at) {
                // Opened for direct I/O but refused it before writing: the page cache, then.
                Err(e) if at == 0 && e.raw_os_error() == Some(libc::EINVAL) => return self.prepare_buffered(),
                r => r?,
            }
            at += n;
        }
        Ok(file)
    }

    /// Where the file system refuses direct I/O: through the page cache, in paced slices.
    fn prepare_buffered(&self) -> std::io::Result<std::fs::File> {
        let file = OpenOptions::new().write(true).create(true).truncate(true).open(&self.path)?;
        let gate = |bytes| self.may_hold(bytes);
        let mut w = Paced::new(file, Some(&self.closing)).gate(&gate);
        let zeros = vec![0u8; PACE];
        let mut left = self.size;
        while left > 0 {
            let n = left.min(PACE as u64) as usize;
            w.push(&zeros[..n])?;
            left -= n as u64;
        }
        w.slice()?;
        Ok(w.file)
    }
}

/// Turns the prepared file at `spare` into the segment `path` starting with `header`: the header
/// is written and synced first, then the file is linked under its segment name (failing, as
/// `create_new` would, if that name exists) and the spare name removed, then the directory is
/// synced. A crash in between leaves either no segment or a whole one; a stale spare name is
/// removed at the next start.
pub(crate) fn install(spare: &Path, path: &Path, header: &[u8]) -> std::io::Result<()> {
    use std::os::unix::fs::FileExt as _;
    let f = OpenOptions::new().write(true).open(spare)?;
    f.write_all_at(header, 0)?;
    f.sync_data()?;
    std::fs::hard_link(spare, path)?;
    std::fs::remove_file(spare)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn ready(spare: &Spare) -> bool {
        for _ in 0..2_000 {
            if *spare.lock() == State::Ready {
                return true;
            }
            std::thread::sleep(std::time::Duration::from_millis(5));
        }
        false
    }

    /// The spare keeps pace with the segment being written, holds zeros only (its size
    /// rounded up to a whole block), and becomes a segment that starts with its header.
    #[test]
    fn a_spare_is_paced_zeroed_and_installed() {
        // Beside the build, not in /tmp: a tmpfs there may refuse direct I/O.
        let beside = concat!(env!("CARGO_MANIFEST_DIR"), "/../target");
        std::fs::create_dir_all(beside).unwrap();
        let dir = tempfile::tempdir_in(beside).unwrap();
        let size = 3 * PACE as u64 + 100;
        let (spare, thread) = Spare::start(dir.path(), size).unwrap();
        let path = dir.path().join(SPARE_NAME);
        spare.segment_filled(PACE as u64 / 2);
        spare.request();
        std::thread::sleep(std::time::Duration::from_millis(300));
        let held = std::fs::metadata(&path).map(|m| m.len()).unwrap_or(0);
        assert!(held <= PACE as u64, "ahead by at most twice the segment: {held} bytes");
        assert!(spare.take().is_none(), "not ready while the segment is young");

        spare.segment_filled(size);
        assert!(ready(&spare), "prepared once the segment allows it");
        let bytes = std::fs::read(&path).unwrap();
        assert_eq!(bytes.len() as u64, size.next_multiple_of(BLOCK as u64));
        assert!(bytes.iter().all(|b| *b == 0));

        let taken = spare.take().unwrap().to_owned();
        let segment = dir.path().join("segment");
        install(&taken, &segment, b"HEADER").unwrap();
        let bytes = std::fs::read(&segment).unwrap();
        assert_eq!(&bytes[..6], b"HEADER");
        assert!(bytes[6..].iter().all(|b| *b == 0));
        assert!(!path.exists(), "the spare name is gone");
        spare.close();
        thread.join().unwrap();
    }
}
