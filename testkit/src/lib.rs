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
