//! A circuit breaker per source side (production, test): after `failures` calls in a row that
//! the source did not answer — refused or reset connections, timeouts, 5xx — the circuit opens
//! and calls are refused at once with `UPSTREAM_CIRCUIT_OPEN` instead of each waiting for its
//! timeout. After `open_for` one call is let through as a probe; its success closes the
//! circuit, its failure opens it again for another `open_for`.
//!
//! An answer that arrives but is wrong (outside the layout, too large) does not count: the
//! source is up, and the refusal of that answer is the right outcome for each call.
//!
//! Lock-free: two atomics and a flag, read on every call. The state is per gateway process;
//! replicas each judge the source for themselves.

use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// Settings of one breaker; `failures == 0` turns it off.
#[derive(Debug, Clone, Copy)]
pub struct Settings {
    pub failures: u32,
    pub open_for: Duration,
}

/// What a transition changed, for the caller to log and count.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transition {
    Opened,
    Closed,
}

#[derive(Debug)]
pub struct Breaker {
    settings: Settings,
    epoch: Instant,
    /// Calls in a row the source did not answer.
    consecutive: AtomicU32,
    /// While open: the end of the open period, in ms since `epoch` (never 0 while open);
    /// 0 while closed.
    open_until_ms: AtomicU64,
    /// While half-open: a probe call is under way.
    probing: AtomicBool,
}

/// Leave to call the source, given by [`Breaker::admit`]. Report how the call went with
/// [`Pass::succeeded`] or [`Pass::failed`]; a pass dropped without a report (the caller went
/// away) frees the probe slot so that the next call may probe.
#[derive(Debug)]
pub struct Pass<'a> {
    breaker: &'a Breaker,
    probe: bool,
    reported: bool,
}

impl Breaker {
    pub fn new(settings: Settings) -> Self {
        Breaker {
            settings,
            epoch: Instant::now(),
            consecutive: AtomicU32::new(0),
            open_until_ms: AtomicU64::new(0),
            probing: AtomicBool::new(false),
        }
    }

    fn now_ms(&self) -> u64 {
        // Starts at 1 so that 0 keeps meaning "closed".
        self.epoch.elapsed().as_millis() as u64 + 1
    }

    /// Whether the circuit is open now (half-open counts as open).
    pub fn is_open(&self) -> bool {
        self.open_until_ms.load(Ordering::Acquire) != 0
    }

    /// Leave to call the source, or `None` while the circuit is open (or half-open with its
    /// probe under way). On `None`, the time left before the next probe.
    pub fn admit(&self) -> Result<Pass<'_>, Duration> {
        let until = self.open_until_ms.load(Ordering::Acquire);
        if until == 0 {
            return Ok(Pass { breaker: self, probe: false, reported: false });
        }
        let now = self.now_ms();
        if now < until {
            return Err(Duration::from_millis(until - now));
        }
        match self.probing.compare_exchange(false, true, Ordering::AcqRel, Ordering::Acquire) {
            Ok(_) => Ok(Pass { breaker: self, probe: true, reported: false }),
            Err(_) => Err(Duration::ZERO),
        }
    }

    fn open(&self) {
        let until = self.now_ms() + self.settings.open_for.as_millis() as u64;
        self.open_until_ms.store(until, Ordering::Release);
    }
}

impl Pass<'_> {
    /// The source answered. Closes the circuit if this was its probe.
    pub fn succeeded(mut self) -> Option<Transition> {
        self.reported = true;
        let b = self.breaker;
        b.consecutive.store(0, Ordering::Relaxed);
        if self.probe {
            b.open_until_ms.store(0, Ordering::Release);
            b.probing.store(false, Ordering::Release);
            return Some(Transition::Closed);
        }
        None
    }

    /// The source did not answer. Opens the circuit at the threshold, or again after a
    /// failed probe.
    pub fn failed(mut self) -> Option<Transition> {
        self.reported = true;
        let b = self.breaker;
        if b.settings.failures == 0 {
            return None;
        }
        let n = b.consecutive.fetch_add(1, Ordering::Relaxed).saturating_add(1);
        if self.probe {
            b.open();
            b.probing.store(false, Ordering::Release);
            return Some(Transition::Opened);
        }
        if n >= b.settings.failures && b.open_until_ms.load(Ordering::Acquire) == 0 {
            b.open();
            return Some(Transition::Opened);
        }
        None
    }
}

impl Drop for Pass<'_> {
    fn drop(&mut self) {
        if self.probe && !self.reported {
            self.breaker.probing.store(false, Ordering::Release);
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn breaker(failures: u32, open_ms: u64) -> Breaker {
        Breaker::new(Settings { failures, open_for: Duration::from_millis(open_ms) })
    }

    #[test]
    fn opens_after_the_threshold_and_refuses_until_the_probe() {
        let b = breaker(3, 60_000);
        for _ in 0..2 {
            assert_eq!(b.admit().unwrap().failed(), None);
        }
        assert_eq!(b.admit().unwrap().failed(), Some(Transition::Opened));
        assert!(b.is_open());
        let wait = b.admit().unwrap_err();
        assert!(wait > Duration::from_secs(50), "{wait:?}");
    }

    #[test]
    fn a_success_resets_the_count() {
        let b = breaker(2, 60_000);
        assert_eq!(b.admit().unwrap().failed(), None);
        assert_eq!(b.admit().unwrap().succeeded(), None);
        assert_eq!(b.admit().unwrap().failed(), None);
        assert!(!b.is_open());
    }

    #[test]
    fn one_probe_at_a_time_then_close_or_reopen() {
        let b = breaker(1, 0);
        assert_eq!(b.admit().unwrap().failed(), Some(Transition::Opened));
        std::thread::sleep(Duration::from_millis(2));
        let probe = b.admit().unwrap();
        assert_eq!(b.admit().unwrap_err(), Duration::ZERO, "a second caller waits for the probe");
        assert_eq!(probe.failed(), Some(Transition::Opened));
        std::thread::sleep(Duration::from_millis(2));
        // A probe whose caller went away frees the slot.
        drop(b.admit().unwrap());
        let probe = b.admit().unwrap();
        assert_eq!(probe.succeeded(), Some(Transition::Closed));
        assert!(!b.is_open());
        assert!(b.admit().is_ok());
    }

    #[test]
    fn zero_failures_turns_it_off() {
        let b = breaker(0, 60_000);
        for _ in 0..100 {
            assert_eq!(b.admit().unwrap().failed(), None);
        }
        assert!(!b.is_open());
    }
}
