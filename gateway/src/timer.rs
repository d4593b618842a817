//! A coarse timer for hyper's connection timeouts.
//!
//! hyper arms its header read timeout for every request a keep-alive connection waits for, and
//! drops it when the head has arrived. With tokio's timer each of those registrations can wake
//! the I/O driver (an `eventfd` write and an extra `epoll_wait`, even while the worker is
//! running: tokio-rs/tokio#5207): about one system call per call at load, for a timeout that
//! almost never fires and needs no millisecond precision.
//!
//! [`CoarseTimer`] keeps its sleeps in a list that one task sweeps every [`TICK`]: arming a
//! sleep takes a lock and a push, no system call, and a sleep fires at most one tick late. The
//! list holds weak references, so a sleep hyper drops costs nothing more; the sweep forgets it.

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use futures_util::task::AtomicWaker;

/// How often the sweep runs: the most a sleep fires late.
pub const TICK: Duration = Duration::from_millis(50);

/// A [`hyper::rt::Timer`] with [`TICK`] resolution. Cheap to clone; the sweep stops when the
/// last clone and every sleep it made are gone.
#[derive(Debug, Clone)]
pub struct CoarseTimer {
    armed: Arc<Armed>,
}

#[derive(Debug, Default)]
struct Armed {
    list: Mutex<Vec<Weak<Entry>>>,
}

#[derive(Debug)]
struct Entry {
    deadline: Mutex<Instant>,
    waker: AtomicWaker,
    /// In the sweep's list (set when first polled pending, cleared when fired).
    listed: AtomicBool,
}

impl CoarseTimer {
    /// Makes the timer and spawns its sweep on the current tokio runtime.
    ///
    /// # Panics
    /// Outside a tokio runtime.
    pub fn spawn() -> Self {
        let armed = Arc::new(Armed::default());
        let weak = Arc::downgrade(&armed);
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(TICK);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tick.tick().await;
                let Some(armed) = weak.upgrade() else { break };
                armed.sweep(Instant::now());
            }
        });
        CoarseTimer { armed }
    }

    fn make(&self, deadline: Instant) -> CoarseSleep {
        CoarseSleep {
            entry: Arc::new(Entry {
                deadline: Mutex::new(deadline),
                waker: AtomicWaker::new(),
                listed: AtomicBool::new(false),
            }),
            armed: self.armed.clone(),
        }
    }
}

impl Armed {
    /// Wakes the sleeps whose deadline has passed and forgets them and the dropped ones.
    fn sweep(&self, now: Instant) {
        let mut fired = Vec::new();
        if let Ok(mut list) = self.list.lock() {
            list.retain(|w| {
                let Some(e) = w.upgrade() else { return false };
                if e.deadline() <= now {
                    e.listed.store(false, Ordering::Release);
                    fired.push(e);
                    return false;
                }
                true
            });
        }
        // Woken outside the lock: a woken task may arm a sleep at once.
        for e in fired {
            e.waker.wake();
        }
    }
}

impl Entry {
    fn deadline(&self) -> Instant {
        *self.deadline.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

/// One sleep of a [`CoarseTimer`].
#[derive(Debug)]
pub struct CoarseSleep {
    entry: Arc<Entry>,
    armed: Arc<Armed>,
}

impl Future for CoarseSleep {
    type Output = ();

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        let e = &self.entry;
        if e.deadline() <= Instant::now() {
            return Poll::Ready(());
        }
        e.waker.register(cx.waker());
        if !e.listed.swap(true, Ordering::AcqRel)
            && let Ok(mut list) = self.armed.list.lock()
        {
            list.push(Arc::downgrade(e));
        }
        Poll::Pending
    }
}

impl hyper::rt::Sleep for CoarseSleep {}

impl hyper::rt::Timer for CoarseTimer {
    fn sleep(&self, duration: Duration) -> Pin<Box<dyn hyper::rt::Sleep>> {
        Box::pin(self.make(Instant::now() + duration))
    }

    fn sleep_until(&self, deadline: Instant) -> Pin<Box<dyn hyper::rt::Sleep>> {
        Box::pin(self.make(deadline))
    }

    fn reset(&self, sleep: &mut Pin<Box<dyn hyper::rt::Sleep>>, new_deadline: Instant) {
        match sleep.as_mut().downcast_mut_pin::<CoarseSleep>() {
            Some(s) => {
                *s.entry.deadline.lock().unwrap_or_else(std::sync::PoisonError::into_inner) = new_deadline;
            }
            None => *sleep = self.sleep_until(new_deadline),
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use hyper::rt::Timer as _;

    fn poll_once(s: &mut Pin<Box<dyn hyper::rt::Sleep>>) -> Poll<()> {
        s.as_mut().poll(&mut Context::from_waker(std::task::Waker::noop()))
    }

    #[tokio::test]
    async fn fires_within_a_tick_of_its_deadline() {
        let timer = CoarseTimer::spawn();
        let start = Instant::now();
        timer.sleep(Duration::from_millis(120)).await;
        let took = start.elapsed();
        assert!(took >= Duration::from_millis(120), "fired early: {took:?}");
        // A tick late at most, with room for a loaded machine.
        assert!(took < Duration::from_millis(120) + TICK + Duration::from_secs(2), "fired late: {took:?}");
    }

    #[tokio::test]
    async fn reset_moves_the_deadline_and_dropped_sleeps_are_forgotten() {
        let timer = CoarseTimer::spawn();
        let mut s = timer.sleep(Duration::from_secs(3600));
        // Polled once: listed with a far deadline.
        assert!(poll_once(&mut s).is_pending());
        timer.reset(&mut s, Instant::now() + Duration::from_millis(60));
        let start = Instant::now();
        s.await;
        assert!(start.elapsed() < Duration::from_secs(5));
        // Dropped without firing: the next sweep removes it.
        let mut dropped = timer.sleep(Duration::from_secs(3600));
        assert!(poll_once(&mut dropped).is_pending());
        assert_eq!(timer.armed.list.lock().unwrap().len(), 1);
        drop(dropped);
        timer.armed.sweep(Instant::now());
        assert!(timer.armed.list.lock().unwrap().is_empty());
    }
}
