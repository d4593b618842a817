//! Test-only helpers.
//!
//! [`CountingAlloc`] is a global allocator that counts allocations **per thread** (a
//! `thread_local!` `Cell<u64>` with a `const` initialiser, bumped in `alloc`, `alloc_zeroed` and
//! `realloc`), so a zero-allocation test is not disturbed by other tests running in parallel
//! threads of the same harness. A test binary installs it with
//!
//! ```ignore
//! #[global_allocator]
//! static A: testkit::CountingAlloc = testkit::CountingAlloc;
//! ```
//!
//! and measures with [`allocations`]. This is the one place of the workspace with `unsafe`.

#![allow(unsafe_code, reason = "a GlobalAlloc implementation is unsafe by definition")]

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;

thread_local! {
    static COUNT: Cell<u64> = const { Cell::new(0) };
}

/// Counts this thread's allocations, then forwards to the system allocator.
#[derive(Debug)]
pub struct CountingAlloc;

fn bump() {
    // `try_with`: during thread teardown the slot may be gone; then the count is irrelevant.
    let _ = COUNT.try_with(|c| c.set(c.get() + 1));
}

// SAFETY: every method forwards to `System` with the caller's arguments unchanged; counting
// touches only a const-initialised thread-local `Cell`, which never allocates.
unsafe impl GlobalAlloc for CountingAlloc {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        bump();
        // SAFETY: forwarded contract.
        unsafe { System.alloc(layout) }
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        bump();
        // SAFETY: forwarded contract.
        unsafe { System.alloc_zeroed(layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        bump();
        // SAFETY: forwarded contract.
        unsafe { System.realloc(ptr, layout, new_size) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: forwarded contract.
        unsafe { System.dealloc(ptr, layout) }
    }
}

/// Allocations made by this thread so far (only meaningful under [`CountingAlloc`]).
pub fn thread_allocations() -> u64 {
    COUNT.with(Cell::get)
}

/// Runs `f` and returns its result with the number of allocations this thread made meanwhile.
pub fn allocations<R>(f: impl FnOnce() -> R) -> (R, u64) {
    let before = thread_allocations();
    let r = f();
    (r, thread_allocations() - before)
}

/// A free TCP port on 127.0.0.1 for a server that binds it itself (PostgreSQL, Prometheus, a
/// gateway started from a configuration file).
///
/// A port found with `bind("127.0.0.1:0")` and released is in the kernel's ephemeral range, so
/// the next `bind(0)` anywhere — a gateway of a test running in parallel — can be handed the
/// same port before the server takes it. This picks below that range (the kernel never hands
/// those out by itself), each call of a process a different one, starting from a place that
/// depends on the process id so parallel test binaries spread apart.
pub fn free_port() -> u16 {
    use std::sync::atomic::{AtomicU32, Ordering};
    static NEXT: AtomicU32 = AtomicU32::new(0);
    const LOW: u32 = 20_000;
    const SPAN: u32 = 12_000; // 20000..32000, below Linux's default ephemeral range (32768..)
    let start = std::process::id().wrapping_mul(2_654_435_761) % SPAN;
    for _ in 0..SPAN {
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let Ok(port) = u16::try_from(LOW + (start + n * 7) % SPAN) else { continue };
        if std::net::TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
    panic!("no free port in 20000..32000 on 127.0.0.1")
}

/// This process's resident memory in KiB (`VmRSS` of `/proc/self/status`; 0 where there is
/// none), for benches and measurement tools that report what a structure takes.
pub fn rss_kib() -> u64 {
    status_kib("VmRSS:")
}

/// This process's peak resident set size so far, in KiB (0 where `/proc` is not there).
pub fn peak_rss_kib() -> u64 {
    status_kib("VmHWM:")
}

/// How much of this process's anonymous memory is held in transparent huge pages, in KiB (0
/// where `/proc` is not there).
pub fn huge_pages_kib() -> u64 {
    kib_in("/proc/self/smaps_rollup", "AnonHugePages:")
}

fn status_kib(field: &str) -> u64 {
    kib_in("/proc/self/status", field)
}

fn kib_in(file: &str, field: &str) -> u64 {
    std::fs::read_to_string(file)
        .ok()
        .and_then(|s| s.lines().find(|l| l.starts_with(field)).and_then(|l| l.split_whitespace().nth(1)?.parse().ok()))
        .unwrap_or(0)
}

/// Runs the second audit verifier, the one written from `docs/audit-format.md` alone
/// (`tests/audit-verifier/verify.py`, Python with `cryptography`, which `scripts/test`
/// installs), with `args`; gives its exit code and what it printed (0 verifies, 1 does not).
pub fn document_verifier<S: AsRef<std::ffi::OsStr>>(args: &[S]) -> (Option<i32>, String) {
    let script = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/audit-verifier/verify.py");
    let out = std::process::Command::new("python3").arg(script).args(args).output();
    let out = out.unwrap_or_else(|e| panic!("python3 does not run ({e}); scripts/test installs it"));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        !stderr.contains("ModuleNotFoundError"),
        "the document's verifier needs Python's `cryptography` (scripts/test installs it): {stderr}"
    );
    (out.status.code(), format!("{}{stderr}", String::from_utf8_lossy(&out.stdout)))
}

/// [`document_verifier`] on one trail directory with the pinned key `key` (hex or a file),
/// every record required to be sealed.
pub fn document_verifier_on_trail(dir: &std::path::Path, key: impl AsRef<std::ffi::OsStr>) -> (Option<i32>, String) {
    document_verifier(&[std::ffi::OsStr::new("verify"), dir.as_os_str(), key.as_ref(), "--require-sealed".as_ref()])
}
