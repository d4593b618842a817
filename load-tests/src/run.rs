//! Running the load: the three modes, per-connection recording merged at the end, the report.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::Context as _;
use gateway::client::{Answer, MtlsClient};
use hdrhistogram::Histogram;
use rustix::fd::OwnedFd;
use rustix::time::{
    Itimerspec, TimerfdClockId, TimerfdFlags, TimerfdTimerFlags, Timespec, timerfd_create, timerfd_settime,
};
use serde::Serialize;
use tokio::io::Interest;
use tokio::io::unix::AsyncFd;
use tokio::sync::Notify;

use crate::mix::{Draw, Prepared};

#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Mode {
    /// N keep-alive connections, each sending when the last answer came.
    Closed,
    /// A fixed total rate (requests per second) over N keep-alive connections; latency from the
    /// scheduled start.
    Open { rate: f64 },
    /// A new connection (full handshake) per request, N at a time.
    Handshake,
}

#[derive(Debug, Clone)]
pub struct Settings {
    pub mode: Mode,
    pub connections: usize,
    pub duration: Duration,
    pub warmup: Duration,
    /// A process whose CPU time is divided by the requests answered.
    pub pid: Option<u32>,
    /// Open loop: the pacer wakes at most once per tick and sends every call then due (zero:
    /// each call at its own time). A send is never early, and its latency counts from its own
    /// schedule, so the wait for the tick is inside every figure.
    pub tick: Duration,
}

/// What one run measured.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    pub mode: Mode,
    pub connections: usize,
    pub seconds: f64,
    pub requests: u64,
    pub requests_per_second: f64,
    pub latency_us: Percentiles,
    pub by_status: BTreeMap<u16, u64>,
    pub by_code: BTreeMap<String, u64>,
    /// Answers that differ from what the mix expects (status or refusal code).
    pub unexpected: u64,
    pub unexpected_examples: Vec<String>,
    /// Requests that got no HTTP answer (connect, TLS or I/O errors).
    pub transport_errors: u64,
    pub transport_examples: Vec<String>,
    pub target_pid: Option<u32>,
    pub target_cpu_seconds: Option<f64>,
    pub cpu_us_per_request: Option<f64>,
    /// The part of `cpu_us_per_request` the kernel counted as system time.
    pub cpu_us_per_request_kernel: Option<f64>,
    /// Wall-clock time (seconds since the Unix epoch) at which the measured window began, to
    /// set `per_second` beside what else happened on the machine.
    pub measured_from_unix: f64,
    /// Latency of the requests scheduled (or started) in each second of the measured window.
    pub per_second: Vec<Second>,
    /// Open loop: the tick (µs) and how many times the pacer slept, warm-up included (with a
    /// tick, at most one a tick).
    pub tick_us: Option<u64>,
    pub pacer_sleeps: Option<usize>,
}

/// One second of the measured window.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Second {
    pub requests: u64,
    pub p50: u64,
    pub p99: u64,
    pub max: u64,
}

#[derive(Debug, Clone, Default, Serialize)]
pub struct Percentiles {
    pub p50: u64,
    pub p90: u64,
    pub p99: u64,
    pub p99_9: u64,
    pub max: u64,
    pub mean: f64,
}

/// One connection's tally.
struct Tally {
    hist: Histogram<u64>,
    /// One coarser histogram per second of the measured window, made when first needed.
    seconds: Vec<Histogram<u32>>,
    by_status: BTreeMap<u16, u64>,
    by_code: BTreeMap<String, u64>,
    unexpected: u64,
    unexpected_examples: Vec<String>,
    transport_errors: u64,
    transport_examples: Vec<String>,
}

impl Tally {
    fn new() -> Self {
        Tally {
            // 1 µs to 10 min, 3 significant digits.
            hist: Histogram::new_with_bounds(1, 600_000_000, 3).unwrap_or_else(|_| unreachable!("valid bounds")),
            seconds: Vec::new(),
            by_status: BTreeMap::new(),
            by_code: BTreeMap::new(),
            unexpected: 0,
            unexpected_examples: Vec::new(),
            transport_errors: 0,
            transport_examples: Vec::new(),
        }
    }

    fn answer(&mut self, p: &Prepared, a: &Answer, second: usize, latency: Duration) {
        let us = (latency.as_micros() as u64).max(1);
        let _ = self.hist.record(us);
        while self.seconds.len() <= second {
            // 1 µs to 10 min, 2 significant digits: enough for a per-second p99.
            let h = Histogram::new_with_bounds(1, 600_000_000, 2).unwrap_or_else(|_| unreachable!("valid bounds"));
            self.seconds.push(h);
        }
        self.seconds[second].saturating_record(us);
        *self.by_status.entry(a.status.as_u16()).or_default() += 1;
        let code = a.headers.get("x-passerelle-code").and_then(|v| v.to_str().ok());
        if let Some(c) = code {
            *self.by_code.entry(c.to_owned()).or_default() += 1;
        }
        if a.status.as_u16() != p.expect_status || code != p.expect_code.as_deref() {
            self.unexpected += 1;
            if self.unexpected_examples.len() < 5 {
                let mut text = a.text();
                text.truncate(200);
                self.unexpected_examples.push(format!("{} {} → {} {}", p.method, p.path, a.status, text));
            }
        }
    }

    fn failed(&mut self, e: &anyhow::Error) {
        self.transport_errors += 1;
        if self.transport_examples.len() < 5 {
            self.transport_examples.push(format!("{e:#}"));
        }
    }

    fn merge(&mut self, o: Tally) {
        let _ = self.hist.add(&o.hist);
        for (k, h) in o.seconds.into_iter().enumerate() {
            if k < self.seconds.len() {
                let _ = self.seconds[k].add(&h);
            } else {
                self.seconds.push(h);
            }
        }
        for (k, v) in o.by_status {
            *self.by_status.entry(k).or_default() += v;
        }
        for (k, v) in o.by_code {
            *self.by_code.entry(k).or_default() += v;
        }
        self.unexpected += o.unexpected;
        self.transport_errors += o.transport_errors;
        for e in o.unexpected_examples {
            if self.unexpected_examples.len() < 5 {
                self.unexpected_examples.push(e);
            }
        }
        for e in o.transport_examples {
            if self.transport_examples.len() < 5 {
                self.transport_examples.push(e);
            }
        }
    }
}

/// Runs the load and reports.
pub async fn run(client: MtlsClient, prepared: Vec<Prepared>, slots: Vec<u16>, s: Settings) -> anyhow::Result<Report> {
    anyhow::ensure!(s.connections > 0, "at least one connection");
    let (prepared, slots) = (Arc::new(prepared), Arc::new(slots));
    let client = Arc::new(client);
    let start = Instant::now() + Duration::from_millis(50);
    let record_from = start + s.warmup;
    let end = record_from + s.duration;
    let mut tasks = Vec::with_capacity(s.connections);
    let pacer = match s.mode {
        Mode::Open { rate } => {
            let interval = Duration::from_secs_f64(s.connections as f64 / rate);
            Some(Pacer::spawn(start, interval, s.connections, end, s.tick)?)
        }
        _ => None,
    };
    for k in 0..s.connections {
        let (client, prepared, slots) = (client.clone(), prepared.clone(), slots.clone());
        let mode = s.mode;
        let n = s.connections;
        let pace = pacer.as_ref().map(|p| p.wakes[k].clone());
        tasks.push(tokio::spawn(async move {
            let mut w = Worker {
                client: &client,
                prepared: &prepared,
                slots: &slots,
                draw: Draw::new(k as u64 + 1),
                record_from,
                end,
                tally: Tally::new(),
            };
            tokio::time::sleep_until(start.into()).await;
            match mode {
                Mode::Closed => w.closed().await,
                Mode::Open { rate } => {
                    let interval = Duration::from_secs_f64(n as f64 / rate);
                    let pace = pace.unwrap_or_else(|| unreachable!("a pacer runs in open mode"));
                    w.open(Pacer::first(start, interval, k, n), interval, &pace).await
                }
                Mode::Handshake => w.handshake().await,
            }
            w.tally
        }));
    }
    let ticks = crate::cpu::ticks_per_second();
    let measured_from_unix = (SystemTime::now() + record_from.saturating_duration_since(Instant::now()))
        .duration_since(UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64());
    tokio::time::sleep_until(record_from.into()).await;
    let cpu0 = s.pid.map(|p| crate::cpu::cpu_time(p, ticks)).transpose()?;
    tokio::time::sleep_until(end.into()).await;
    let cpu1 = s.pid.map(|p| crate::cpu::cpu_time(p, ticks)).transpose()?;
    let mut total = Tally::new();
    for t in tasks {
        total.merge(t.await?);
    }
    let pacer_sleeps = match pacer {
        Some(p) => Some(p.task.await?),
        None => None,
    };
    let requests = total.hist.len();
    let seconds = s.duration.as_secs_f64();
    let used = cpu0.zip(cpu1).map(|(a, b)| a.until(b));
    let cpu = used.map(|u| u.total().as_secs_f64());
    let per_request = |d: Duration| (requests > 0).then(|| d.as_secs_f64() * 1e6 / requests as f64);
    let h = &total.hist;
    Ok(Report {
        mode: s.mode,
        connections: s.connections,
        seconds,
        requests,
        requests_per_second: requests as f64 / seconds,
        latency_us: Percentiles {
            p50: h.value_at_quantile(0.5),
            p90: h.value_at_quantile(0.9),
            p99: h.value_at_quantile(0.99),
            p99_9: h.value_at_quantile(0.999),
            max: h.max(),
            mean: h.mean(),
        },
        by_status: total.by_status,
        by_code: total.by_code,
        unexpected: total.unexpected,
        unexpected_examples: total.unexpected_examples,
        transport_errors: total.transport_errors,
        transport_examples: total.transport_examples,
        target_pid: s.pid,
        target_cpu_seconds: cpu,
        cpu_us_per_request: used.and_then(|u| per_request(u.total())),
        cpu_us_per_request_kernel: used.and_then(|u| per_request(u.system)),
        measured_from_unix,
        per_second: total
            .seconds
            .iter()
            .map(|h| Second {
                requests: h.len(),
                p50: h.value_at_quantile(0.5),
                p99: h.value_at_quantile(0.99),
                max: h.max(),
            })
            .collect(),
        tick_us: pacer_sleeps.map(|_| s.tick.as_micros() as u64),
        pacer_sleeps,
    })
}

/// Open-loop pacing. tokio's timer has millisecond granularity and rounds a deadline up, so a
/// send scheduled with `sleep_until` left up to a millisecond late; latency counts from the
/// schedule, so that lateness was in every figure (most of a bare proxy's p50 at 2,000/s). One
/// task sleeps to each send's time on a [`Timer`] (a timerfd: its lateness is the kernel's
/// wake-up, tens of microseconds) and wakes that connection.
///
/// Each wake-up of the pacer costs the generator's core a return from `epoll_wait`, and each
/// lone send a wake-up of the gateway and of the upstream behind it. With a tick, the pacer
/// wakes at most once per tick and sends every call due by then, a few at a time, as callers
/// that do not coordinate also arrive. Measured on the core that carries the generator and the
/// sandbox (soak.py's mix at 14,097 calls/s, `docs/operations.md`, "The load generator's tick").
struct Pacer {
    wakes: Vec<Arc<Notify>>,
    /// The pacing task; it ends at `end` with the number of times it slept.
    task: tokio::task::JoinHandle<usize>,
}

impl Pacer {
    /// Connection `k`'s first send: the `n` connections' sends interleave evenly.
    fn first(start: Instant, interval: Duration, k: usize, n: usize) -> Instant {
        start + interval.mul_f64(k as f64 / n as f64)
    }

    /// Starts the task that wakes connection `k` at `first(k) + i * interval` until `end`, or
    /// at the first wake-up after it when the last one was less than a `tick` before. It
    /// computes each time exactly as the connection does, and wakes no earlier.
    fn spawn(start: Instant, interval: Duration, n: usize, end: Instant, tick: Duration) -> anyhow::Result<Self> {
        let wakes: Vec<Arc<Notify>> = (0..n).map(|_| Arc::new(Notify::new())).collect();
        let notify = wakes.clone();
        let timer = Timer::new().context("the pacer's timer")?;
        let task = tokio::spawn(async move {
            let mut next: Vec<Instant> = (0..n).map(|k| Pacer::first(start, interval, k, n)).collect();
            let mut coarse = false;
            let (mut woke, mut sleeps) = (Instant::now(), 0);
            // Connection k's sends come in the order k = 0, 1, …, n-1, 0, 1, …
            for k in (0..n).cycle() {
                let at = next[k];
                if at >= end {
                    if next.iter().all(|t| *t >= end) {
                        break;
                    }
                    continue;
                }
                if at > Instant::now() {
                    let until = at.max(woke + tick);
                    if !coarse && let Err(e) = timer.sleep_until(until).await {
                        // Late sends are counted from their schedule, so the figures stay
                        // honest; they are only coarser. Said once, on stderr, beside the report.
                        eprintln!("pacer: high-resolution timer failed ({e}); pacing on tokio's timer");
                        coarse = true;
                    }
                    if coarse {
                        tokio::time::sleep_until(until.into()).await;
                    }
                    woke = Instant::now();
                    sleeps += 1;
                }
                notify[k].notify_one();
                next[k] += interval;
            }
            sleeps
        });
        Ok(Pacer { wakes, task })
    }
}

/// A one-shot timer with nanosecond resolution on the runtime's reactor: a timerfd on the
/// monotonic clock (the clock `Instant` reads), registered with tokio like a socket.
struct Timer(AsyncFd<OwnedFd>);

impl Timer {
    #[allow(unsafe_code, reason = "tokio's registration of a file descriptor is an unsafe fn (tokio#8587)")]
    fn new() -> std::io::Result<Self> {
        let fd = timerfd_create(TimerfdClockId::Monotonic, TimerfdFlags::NONBLOCK | TimerfdFlags::CLOEXEC)?;
        // SAFETY: the `OwnedFd` moves into the `AsyncFd`, which keeps it open and never replaces
        // it until the registration is dropped.
        let fd = unsafe { AsyncFd::register_with_interest(fd, Interest::READABLE) }.map_err(|e| e.into_parts().1)?;
        Ok(Timer(fd))
    }

    /// Returns at `at` or later; at once if `at` has passed.
    async fn sleep_until(&self, at: Instant) -> std::io::Result<()> {
        let wait = at.saturating_duration_since(Instant::now());
        if wait.is_zero() {
            return Ok(());
        }
        let value =
            Timespec { tv_sec: wait.as_secs().try_into().unwrap_or(i64::MAX), tv_nsec: wait.subsec_nanos().into() };
        let zero = Timespec { tv_sec: 0, tv_nsec: 0 };
        // Relative: the kernel counts from its own now, which is no earlier than ours above.
        timerfd_settime(
            self.0.get_ref(),
            TimerfdTimerFlags::empty(),
            &Itimerspec { it_interval: zero, it_value: value },
        )?;
        loop {
            let mut ready = self.0.readable().await?;
            // The count of expirations (8 bytes); reading it clears the readiness.
            match rustix::io::read(ready.get_inner(), &mut [0u8; 8]) {
                Ok(_) => return Ok(()),
                Err(rustix::io::Errno::AGAIN) => ready.clear_ready(),
                Err(e) => return Err(e.into()),
            }
        }
    }
}

/// One connection's loop.
struct Worker<'a> {
    client: &'a MtlsClient,
    prepared: &'a [Prepared],
    slots: &'a [u16],
    draw: Draw,
    record_from: Instant,
    end: Instant,
    tally: Tally,
}

impl<'a> Worker<'a> {
    fn pick(&mut self) -> &'a Prepared {
        &self.prepared[self.slots[self.draw.next(self.slots.len())] as usize]
    }

    async fn closed(&mut self) {
        let mut conn = None;
        while Instant::now() < self.end {
            if conn.is_none() {
                match self.client.connect().await {
                    Ok(c) => conn = Some(c),
                    Err(e) => {
                        self.tally.failed(&e);
                        tokio::time::sleep(Duration::from_millis(10)).await;
                        continue;
                    }
                }
            }
            let Some(c) = conn.as_mut() else { continue };
            let p = self.pick();
            let t0 = Instant::now();
            let result = c.send(p.request()).await;
            let done = Instant::now();
            if result.is_err() {
                conn = None;
            }
            self.record(p, result, t0, done);
        }
    }

    async fn open(&mut self, first: Instant, interval: Duration, pace: &Notify) {
        let mut conn = None;
        let mut next = first;
        while next < self.end {
            // The pacer wakes this connection at `next` (a wake-up left over from a send that
            // was late is simply waited again).
            while Instant::now() < next {
                pace.notified().await;
            }
            if conn.is_none() {
                match self.client.connect().await {
                    Ok(c) => conn = Some(c),
                    Err(e) => {
                        if next >= self.record_from {
                            self.tally.failed(&e);
                        }
                        next += interval;
                        continue;
                    }
                }
            }
            let Some(c) = conn.as_mut() else { continue };
            let p = self.pick();
            let result = c.send(p.request()).await;
            if result.is_err() {
                conn = None;
            }
            // From the scheduled start: a late send counts its wait (no coordinated omission).
            self.record(p, result, next, Instant::now());
            next += interval;
        }
    }

    async fn handshake(&mut self) {
        while Instant::now() < self.end {
            let p = self.pick();
            let t0 = Instant::now();
            let result = self.client.send(p.request()).await;
            self.record(p, result, t0, Instant::now());
        }
    }

    /// Counts an answer that started (or was scheduled) at `from`, inside the measured window,
    /// and completed at `done`.
    fn record(&mut self, p: &Prepared, result: anyhow::Result<Answer>, from: Instant, done: Instant) {
        if from < self.record_from || from >= self.end {
            return;
        }
        match result {
            Ok(a) => self.tally.answer(p, &a, (from - self.record_from).as_secs() as usize, done - from),
            Err(e) => self.tally.failed(&e),
        }
    }
}

impl Report {
    /// A few human lines.
    pub fn table(&self) -> String {
        let mode = match self.mode {
            Mode::Closed => "closed loop".to_owned(),
            Mode::Open { rate } => format!(
                "open loop at {rate} req/s (pacing tick {} µs, {} wake-ups)",
                self.tick_us.unwrap_or(0),
                self.pacer_sleeps.unwrap_or(0)
            ),
            Mode::Handshake => "new connection (full handshake) per request".to_owned(),
        };
        let l = &self.latency_us;
        let mut out = format!(
            "{mode}, {} connections, {:.1} s\nrequests {} ({:.1} req/s), unexpected answers {}, transport errors {}\nlatency µs: p50 {}  p90 {}  p99 {}  p99.9 {}  max {}  mean {:.0}\n",
            self.connections,
            self.seconds,
            self.requests,
            self.requests_per_second,
            self.unexpected,
            self.transport_errors,
            l.p50,
            l.p90,
            l.p99,
            l.p99_9,
            l.max,
            l.mean
        );
        let statuses: Vec<String> = self.by_status.iter().map(|(s, n)| format!("{s} × {n}")).collect();
        out.push_str(&format!("answers: {}\n", statuses.join(", ")));
        if !self.by_code.is_empty() {
            let codes: Vec<String> = self.by_code.iter().map(|(c, n)| format!("{c} × {n}")).collect();
            out.push_str(&format!("refusal codes: {}\n", codes.join(", ")));
        }
        if let (Some(pid), Some(cpu), Some(per)) = (self.target_pid, self.target_cpu_seconds, self.cpu_us_per_request) {
            let kernel = self.cpu_us_per_request_kernel.unwrap_or(0.0);
            out.push_str(&format!(
                "target pid {pid}: {cpu:.2} s CPU = {per:.1} µs per request ({kernel:.1} in the kernel)\n"
            ));
        }
        for e in self.unexpected_examples.iter().chain(&self.transport_examples) {
            out.push_str(&format!("  e.g. {e}\n"));
        }
        out
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[tokio::test]
    async fn the_timer_returns_at_its_time_and_not_before() {
        let timer = Timer::new().unwrap();
        // The same timer re-armed: a readiness left over from the last expiry would end the
        // next sleep early.
        for wait_us in [0, 20, 250, 3_000, 40, 1_000] {
            let at = Instant::now() + Duration::from_micros(wait_us);
            tokio::time::timeout(Duration::from_secs(5), timer.sleep_until(at)).await.unwrap().unwrap();
            let now = Instant::now();
            assert!(now >= at, "returned {:?} early after asking for {wait_us} µs", at - now);
        }
        // A time already past returns at once.
        let past = Instant::now();
        timer.sleep_until(past).await.unwrap();
    }

    /// What pacing did: each connection's sends, and how often the pacer slept.
    #[derive(Debug, PartialEq)]
    struct Paced {
        sends: Vec<usize>,
        sleeps: usize,
    }

    /// Each connection waits for its own schedule as `Worker::open` does (a wake-up before its
    /// time, from a notification stored while it was sending, is waited again), and counts its
    /// sends.
    async fn paced(n: usize, interval: Duration, window: Duration, tick: Duration) -> Paced {
        let start = Instant::now() + Duration::from_millis(5);
        let end = start + window;
        let pacer = Pacer::spawn(start, interval, n, end, tick).unwrap();
        let mut tasks = Vec::new();
        for (k, pace) in pacer.wakes.iter().cloned().enumerate() {
            tasks.push(tokio::spawn(async move {
                let (mut next, mut sends) = (Pacer::first(start, interval, k, n), 0);
                while next < end {
                    while Instant::now() < next {
                        pace.notified().await;
                    }
                    sends += 1;
                    next += interval;
                }
                sends
            }));
        }
        let limit = Duration::from_secs(10);
        let mut sends = Vec::new();
        for t in tasks {
            sends.push(tokio::time::timeout(limit, t).await.unwrap().unwrap());
        }
        let sleeps = tokio::time::timeout(limit, pacer.task).await.unwrap().unwrap();
        Paced { sends, sleeps }
    }

    #[tokio::test]
    async fn the_pacer_wakes_every_connection_for_every_send() {
        // 4 connections, 2 ms apart each (a send every 0.5 ms), for 30 ms: connection k's sends
        // are at k × 0.5 ms + i × 2 ms, 15 of them each. A missed wake-up leaves a connection
        // waiting and the timeout fails the test.
        let p = paced(4, Duration::from_millis(2), Duration::from_millis(30), Duration::ZERO).await;
        assert_eq!(p.sends, vec![15; 4]);
        assert!(p.sleeps <= 60, "at most one sleep a send: {}", p.sleeps);
    }

    #[tokio::test]
    async fn with_a_tick_the_pacer_sleeps_once_a_tick_and_sends_all() {
        // The same 60 sends with a 5 ms tick: each sleep ends no sooner than 5 ms after the last
        // one ended, so at most 30 / 5 + 1 of them, and every send still comes.
        let p = paced(4, Duration::from_millis(2), Duration::from_millis(30), Duration::from_millis(5)).await;
        assert_eq!(p.sends, vec![15; 4]);
        assert!((1..=7).contains(&p.sleeps), "slept {} times", p.sleeps);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn the_pacer_serves_connections_on_other_threads() {
        let p = paced(3, Duration::from_micros(900), Duration::from_micros(9_000), Duration::from_micros(250)).await;
        assert_eq!(p.sends, vec![10; 3]);
    }
}
