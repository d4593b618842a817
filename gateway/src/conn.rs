//! Connections: what a client may hold open on each listener, and the end of connections
//! whose certificate or organisation no longer holds.
//!
//! Every listener (data, control, public, operations) has its [`Connections`]: it admits a
//! connection only within the listener's [`Bounds`] — at most `max_connections` at once, and
//! `max_per_peer` from one address — and keeps the open ones in a table that one sweeper task
//! per listener walks a few times a second. The sweeper ends a connection that carried no
//! request for `idle_timeout`, that is older than `max_age` or whose certificate expired;
//! [`Connections::recheck`] ends those a reload finds revoked, [`Connections::recheck_orgs`]
//! those whose organisation left the policy. An ended connection is shut down gracefully by
//! [`drive`] (HTTP/2 GOAWAY, HTTP/1.1 `Connection: close` after the call in flight) and
//! dropped if it has not drained [`DRAIN`] later. A request that still arrives on a connection
//! ended for its certificate is refused with `CLIENT_CERT_REVOKED` by
//! [`crate::pipeline::identity::Caller::org`], with its audit record.
//!
//! The connection's own task does no timekeeping: per poll it loads one flag and registers its
//! waker; per call it counts the request in two relaxed counters. Everything else happens in
//! the sweeper, on reloads and on policy changes.

use std::collections::HashMap;
use std::net::IpAddr;
use std::pin::pin;
use std::sync::atomic::{AtomicBool, AtomicU8, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::Poll;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use futures_util::task::AtomicWaker;
use hyper_util::server::graceful::GracefulConnection;
use rustls::server::danger::ClientCertVerifier;
use rustls_pki_types::{CertificateDer, UnixTime};
use serde::Deserialize;
use tokio::sync::watch;
use tokio::time::Instant;

use crate::error::Body;
use crate::metrics::Metrics;

/// How long a connection told to end may take to answer its calls in flight.
pub const DRAIN: Duration = Duration::from_secs(10);

/// Why the gateway ended a connection (the `reason` of `passerelle_connections_closed_total`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum Ended {
    /// The peer certificate is revoked (or no longer chains to a trusted CA) after a reload.
    Revoked = 1,
    /// The peer certificate's validity ended.
    Expired = 2,
    /// The certificate's organisation left the policy.
    Organisation = 3,
    /// No request for the idle timeout.
    Idle = 4,
    /// Older than the maximum age.
    Age = 5,
    /// The gateway is stopping.
    Shutdown = 6,
}

impl Ended {
    pub const fn as_str(self) -> &'static str {
        match self {
            Ended::Revoked => "revoked",
            Ended::Expired => "expired",
            Ended::Organisation => "organisation",
            Ended::Idle => "idle",
            Ended::Age => "age",
            Ended::Shutdown => "shutdown",
        }
    }

    fn from_u8(v: u8) -> Option<Self> {
        Some(match v {
            1 => Ended::Revoked,
            2 => Ended::Expired,
            3 => Ended::Organisation,
            4 => Ended::Idle,
            5 => Ended::Age,
            6 => Ended::Shutdown,
            _ => return None,
        })
    }

    /// Whether the certificate or its organisation no longer holds: calls are refused.
    pub const fn refuses_calls(self) -> bool {
        matches!(self, Ended::Revoked | Ended::Expired | Ended::Organisation)
    }
}

/// The bounds of one listener, as configured (`[connections.<listener>]`); an absent value is
/// the listener's default ([`Bounds::default_for`]).
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct BoundsConfig {
    /// Time allowed to receive a request's headers, in milliseconds.
    pub header_read_timeout_ms: Option<u64>,
    /// A connection that carries no request for this long is closed, in milliseconds.
    pub idle_timeout_ms: Option<u64>,
    /// A connection older than this is drained and closed, in milliseconds (clients reconnect;
    /// long-lived connections pick up new TLS material this way).
    pub max_age_ms: Option<u64>,
    /// Connections open at once on the listener; more are closed at accept.
    pub max_connections: Option<usize>,
    /// Connections open at once from one IP address; 0: no such limit.
    pub max_per_peer: Option<usize>,
    /// HTTP/2 PING interval, in milliseconds: a peer that does not answer within it is gone.
    pub keepalive_interval_ms: Option<u64>,
}

/// `[connections]`: the bounds of each listener.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ConnectionsConfig {
    pub data: BoundsConfig,
    pub control: BoundsConfig,
    pub public: BoundsConfig,
    pub ops: BoundsConfig,
}

/// The bounds in force on one listener.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Bounds {
    pub header_read_timeout: Duration,
    pub idle_timeout: Duration,
    pub max_age: Duration,
    pub max_connections: usize,
    /// 0: no per-address limit.
    pub max_per_peer: usize,
    pub keepalive_interval: Duration,
}

impl Bounds {
    /// The defaults of `listener`: the data plane and control plane serve authenticated
    /// organisations, often many behind one address; the public listener serves anyone, so
    /// it bounds each address and keeps connections short; the operations listener serves a
    /// scraper or two.
    pub fn default_for(listener: &str) -> Bounds {
        let s = Duration::from_secs;
        match listener {
            "public" => Bounds {
                header_read_timeout: s(5),
                idle_timeout: s(15),
                max_age: s(600),
                max_connections: 1_024,
                max_per_peer: 16,
                keepalive_interval: s(20),
            },
            "ops" => Bounds {
                header_read_timeout: s(5),
                idle_timeout: s(30),
                max_age: s(600),
                max_connections: 64,
                max_per_peer: 0,
                keepalive_interval: s(20),
            },
            "control" => Bounds {
                header_read_timeout: s(5),
                idle_timeout: s(60),
                max_age: s(3_600),
                max_connections: 256,
                max_per_peer: 0,
                keepalive_interval: s(30),
            },
            _ => Bounds {
                header_read_timeout: s(5),
                idle_timeout: s(60),
                max_age: s(3_600),
                max_connections: 10_000,
                max_per_peer: 0,
                keepalive_interval: s(30),
            },
        }
    }

    /// The configured values over the listener's defaults.
    pub fn of(listener: &str, c: &BoundsConfig) -> Bounds {
        let d = Bounds::default_for(listener);
        let ms = |v: Option<u64>, d: Duration| v.map_or(d, Duration::from_millis);
        Bounds {
            header_read_timeout: ms(c.header_read_timeout_ms, d.header_read_timeout),
            idle_timeout: ms(c.idle_timeout_ms, d.idle_timeout),
            max_age: ms(c.max_age_ms, d.max_age),
            max_connections: c.max_connections.unwrap_or(d.max_connections),
            max_per_peer: c.max_per_peer.unwrap_or(d.max_per_peer),
            keepalive_interval: ms(c.keepalive_interval_ms, d.keepalive_interval),
        }
    }

    /// What is wrong with these bounds, if anything.
    pub fn check(&self, listener: &str) -> Result<(), String> {
        let z = Duration::ZERO;
        if self.header_read_timeout == z || self.idle_timeout == z || self.max_age == z {
            return Err(format!("connections.{listener}: timeouts and max_age_ms must be above 0"));
        }
        if self.max_connections == 0 {
            return Err(format!("connections.{listener}.max_connections must be at least 1"));
        }
        if self.keepalive_interval < Duration::from_millis(100) {
            return Err(format!("connections.{listener}.keepalive_interval_ms must be at least 100"));
        }
        Ok(())
    }
}

/// The state of one open connection, shared by its task, its requests and the sweeper.
#[derive(Debug, Default)]
pub struct ConnState {
    /// 0 while open; otherwise the [`Ended`] reason.
    ended: AtomicU8,
    /// Set when the connection did not drain in time: its task drops it.
    kill: AtomicBool,
    /// Requests received so far (for the idle check).
    requests: AtomicU64,
    /// Requests still being answered.
    in_flight: AtomicUsize,
    /// The connection's task, woken when the connection must end.
    waker: AtomicWaker,
}

impl ConnState {
    /// Why the connection was ended, once it was.
    pub fn ended(&self) -> Option<Ended> {
        Ended::from_u8(self.ended.load(Ordering::Acquire))
    }

    /// Ends the connection for `why`, waking its task; false when it had already ended (the
    /// first reason stays).
    fn end(&self, why: Ended) -> bool {
        let first = self.ended.compare_exchange(0, why as u8, Ordering::AcqRel, Ordering::Acquire).is_ok();
        if first {
            self.waker.wake();
        }
        first
    }

    /// Counts a request for the time it is answered.
    fn request(self: &Arc<Self>) -> InFlight {
        self.requests.fetch_add(1, Ordering::Relaxed);
        self.in_flight.fetch_add(1, Ordering::Relaxed);
        InFlight(self.clone())
    }
}

/// The service of a connection whose state is `state`: `handle` answers each request, counted
/// in flight until its answer is ready (the sweeper's idle check reads the counts).
pub fn counted<F, Fut>(
    state: Arc<ConnState>,
    handle: F,
) -> impl hyper::service::Service<
    http::Request<hyper::body::Incoming>,
    Response = http::Response<Body>,
    Error = std::convert::Infallible,
    Future = impl std::future::Future<Output = Result<http::Response<Body>, std::convert::Infallible>> + Send + 'static,
> + Clone
where
    F: Fn(http::Request<hyper::body::Incoming>) -> Fut + Clone + Send + 'static,
    Fut: std::future::Future<Output = http::Response<Body>> + Send + 'static,
{
    hyper::service::service_fn(move |req| {
        let in_flight = state.request();
        let answer = handle(req);
        async move {
            let answer = answer.await;
            drop(in_flight);
            Ok(answer)
        }
    })
}

/// A request being answered; it leaves the count when dropped.
#[derive(Debug)]
pub struct InFlight(Arc<ConnState>);

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.in_flight.fetch_sub(1, Ordering::Relaxed);
    }
}

/// What the sweeper knows of one open connection.
#[derive(Debug)]
struct Entry {
    state: Arc<ConnState>,
    /// The peer's certificate chain (mutual-TLS listeners), checked again at reloads.
    chain: Vec<CertificateDer<'static>>,
    org: Option<policies::ids::Kbo>,
    opened: Instant,
    expires: Option<Instant>,
    /// The request count the sweeper last saw, and since when it has not moved.
    seen: u64,
    quiet_since: Instant,
    ended_at: Option<Instant>,
}

#[derive(Debug, Default)]
struct Table {
    open: HashMap<u64, Entry>,
    per_peer: HashMap<IpAddr, usize>,
    next: u64,
}

/// The connections of one listener: admission within its bounds, the table of open ones, and
/// their ends.
#[derive(Debug)]
pub struct Connections {
    pub bounds: Bounds,
    listener: &'static str,
    /// Connections admitted (from accept to close, the handshake included).
    admitted: AtomicUsize,
    table: Mutex<Table>,
    closed: prometheus::IntCounterVec,
}

/// An admitted connection; it leaves the counts (and the table) when dropped.
#[derive(Debug)]
pub struct Slot {
    connections: Arc<Connections>,
    peer: IpAddr,
    id: Option<u64>,
}

impl Connections {
    pub fn new(listener: &'static str, bounds: Bounds, metrics: &Metrics) -> Arc<Self> {
        Arc::new(Connections {
            bounds,
            listener,
            admitted: AtomicUsize::new(0),
            table: Mutex::default(),
            closed: metrics.connections_closed.clone(),
        })
    }

    fn table(&self) -> MutexGuard<'_, Table> {
        self.table.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Connections admitted now.
    pub fn open(&self) -> usize {
        self.admitted.load(Ordering::Acquire)
    }

    /// Admits a connection from `peer`, or counts why not (the caller closes the socket).
    pub fn admit(self: &Arc<Self>, peer: IpAddr) -> Option<Slot> {
        if self.admitted.fetch_add(1, Ordering::AcqRel) >= self.bounds.max_connections {
            self.admitted.fetch_sub(1, Ordering::AcqRel);
            self.closed.with_label_values(&[self.listener, "limit"]).inc();
            return None;
        }
        if self.bounds.max_per_peer > 0 {
            let mut t = self.table();
            let n = t.per_peer.entry(peer).or_insert(0);
            if *n >= self.bounds.max_per_peer {
                drop(t);
                self.admitted.fetch_sub(1, Ordering::AcqRel);
                self.closed.with_label_values(&[self.listener, "peer-limit"]).inc();
                return None;
            }
            *n += 1;
        }
        Some(Slot { connections: self.clone(), peer, id: None })
    }

    /// Ends `state` for `why` and counts it (a stop of the gateway is not counted).
    fn end(&self, state: &ConnState, why: Ended) -> bool {
        let first = state.end(why);
        if first && why != Ended::Shutdown {
            self.closed.with_label_values(&[self.listener, why.as_str()]).inc();
        }
        first
    }

    /// Verifies every open connection's certificate chain again with `verifier` (the CRLs and
    /// CAs now in force) and checks its organisation with `known`; ends those that fail.
    /// Returns how many it ended.
    pub fn recheck(&self, verifier: &dyn ClientCertVerifier, known: impl Fn(policies::ids::Kbo) -> bool) -> usize {
        let now = UnixTime::now();
        let peers: Vec<_> = self
            .table()
            .open
            .values()
            .filter(|e| e.state.ended().is_none() && !e.chain.is_empty())
            .map(|e| (e.chain.clone(), e.org, e.state.clone()))
            .collect();
        let mut ended = 0;
        for (chain, org, state) in peers {
            let Some((leaf, rest)) = chain.split_first() else { continue };
            let why = match verifier.verify_client_cert(leaf, rest, now) {
                Err(rustls::Error::InvalidCertificate(rustls::CertificateError::Expired)) => Some(Ended::Expired),
                Err(_) => Some(Ended::Revoked),
                Ok(_) if org.is_some_and(|k| !known(k)) => Some(Ended::Organisation),
                Ok(_) => None,
            };
            if let Some(why) = why
                && self.end(&state, why)
            {
                ended += 1;
            }
        }
        ended
    }

    /// Ends the open connections whose organisation `known` no longer knows (it left the
    /// policy); returns how many. No certificate is verified again: a policy change does not
    /// change the CAs or CRLs.
    pub fn recheck_orgs(&self, known: impl Fn(policies::ids::Kbo) -> bool) -> usize {
        let states: Vec<_> = self
            .table()
            .open
            .values()
            .filter(|e| e.state.ended().is_none() && e.org.is_some_and(|k| !known(k)))
            .map(|e| e.state.clone())
            .collect();
        states.iter().filter(|s| self.end(s, Ended::Organisation)).count()
    }

    /// One pass over the open connections at `now`: ends the idle, the too old and the
    /// expired ones, drops those that did not drain in time. `stopping`: ends them all.
    fn sweep(&self, now: Instant, stopping: bool) {
        let mut to_end = Vec::new();
        {
            let mut t = self.table();
            for e in t.open.values_mut() {
                if let Some(at) = e.ended_at {
                    if now.duration_since(at) >= DRAIN && !e.state.kill.swap(true, Ordering::AcqRel) {
                        tracing::debug!(listener = self.listener, "connection did not drain; dropped");
                        e.state.waker.wake();
                    }
                    continue;
                }
                if e.state.ended().is_some() {
                    e.ended_at = Some(now);
                    continue;
                }
                let requests = e.state.requests.load(Ordering::Relaxed);
                if requests != e.seen || e.state.in_flight.load(Ordering::Relaxed) > 0 {
                    (e.seen, e.quiet_since) = (requests, now);
                }
                let why = if stopping {
                    Ended::Shutdown
                } else if e.expires.is_some_and(|x| now >= x) {
                    Ended::Expired
                } else if now.duration_since(e.opened) >= self.bounds.max_age {
                    Ended::Age
                } else if now.duration_since(e.quiet_since) >= self.bounds.idle_timeout {
                    Ended::Idle
                } else {
                    continue;
                };
                e.ended_at = Some(now);
                to_end.push((e.state.clone(), why));
            }
        }
        for (state, why) in to_end {
            self.end(&state, why);
        }
    }

    /// Sweeps the table a few times a second (a quarter of the idle timeout, at least every
    /// second) until `shutdown`; then ends every connection and keeps sweeping until they are
    /// gone or have had [`DRAIN`] to finish.
    pub async fn sweeper(self: Arc<Self>, mut shutdown: watch::Receiver<bool>) {
        let tick = (self.bounds.idle_timeout / 4).clamp(Duration::from_millis(50), Duration::from_secs(1));
        let mut every = tokio::time::interval(tick);
        every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut stopping = false;
        loop {
            tokio::select! {
                _ = every.tick() => {}
                changed = shutdown.changed(), if !stopping => {
                    stopping = changed.is_err() || *shutdown.borrow();
                }
            }
            self.sweep(Instant::now(), stopping);
            if stopping && self.open() == 0 {
                return;
            }
        }
    }

    /// Waits (up to [`DRAIN`] and a second) until every admitted connection has closed.
    pub async fn drained(&self) {
        let deadline = Instant::now() + DRAIN + Duration::from_secs(1);
        while self.open() > 0 {
            if Instant::now() > deadline {
                tracing::warn!(
                    listener = self.listener,
                    "in-flight calls did not finish within the shutdown grace period"
                );
                return;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
}

impl Slot {
    /// Enters the connection, once its handshake is done, in the listener's table: `chain` (the
    /// peer's certificates, for mutual-TLS listeners) and `org` are checked again at reloads and
    /// policy changes; `not_after` (Unix seconds) ends it when the certificate expires.
    pub fn open(
        &mut self,
        chain: &[CertificateDer<'_>],
        org: Option<policies::ids::Kbo>,
        not_after: Option<i64>,
    ) -> Arc<ConnState> {
        let now = Instant::now();
        let expires = not_after.map(|t| {
            let unix = SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs());
            now + Duration::from_secs(u64::try_from(t).unwrap_or(0).saturating_sub(unix))
        });
        let state = Arc::new(ConnState::default());
        let entry = Entry {
            state: state.clone(),
            chain: chain.iter().map(|c| c.clone().into_owned()).collect(),
            org,
            opened: now,
            expires,
            seen: 0,
            quiet_since: now,
            ended_at: None,
        };
        let mut t = self.connections.table();
        let id = t.next;
        t.next += 1;
        t.open.insert(id, entry);
        self.id = Some(id);
        state
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        let c = &self.connections;
        {
            let mut t = c.table();
            if let Some(id) = self.id {
                t.open.remove(&id);
            }
            if c.bounds.max_per_peer > 0
                && let Some(n) = t.per_peer.get_mut(&self.peer)
            {
                *n -= 1;
                if *n == 0 {
                    t.per_peer.remove(&self.peer);
                }
            }
        }
        c.admitted.fetch_sub(1, Ordering::AcqRel);
    }
}

/// Drives `conn` to its end: shuts it down gracefully once `state` is ended, drops it when the
/// sweeper says it did not drain in time. Per poll: one flag and the waker's registration.
pub async fn drive<C>(conn: C, state: &ConnState) -> Result<(), C::Error>
where
    C: GracefulConnection,
{
    let mut conn = pin!(conn);
    let mut shutting = false;
    std::future::poll_fn(|cx| {
        state.waker.register(cx.waker());
        if state.kill.load(Ordering::Acquire) {
            return Poll::Ready(Ok(()));
        }
        if !shutting && state.ended.load(Ordering::Acquire) != 0 {
            shutting = true;
            conn.as_mut().graceful_shutdown();
        }
        conn.as_mut().poll(cx)
    })
    .await
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn admission_bounds_the_listener_and_each_address() {
        let metrics = Metrics::new().unwrap();
        let bounds = Bounds { max_connections: 3, max_per_peer: 2, ..Bounds::default_for("public") };
        let a = Connections::new("public", bounds, &metrics);
        let (x, y): (IpAddr, IpAddr) = ("10.0.0.1".parse().unwrap(), "10.0.0.2".parse().unwrap());
        let one = a.admit(x).unwrap();
        let two = a.admit(x).unwrap();
        assert!(a.admit(x).is_none(), "a third from one address");
        let three = a.admit(y).unwrap();
        assert!(a.admit(y).is_none(), "a fourth on the listener");
        drop(one);
        let _four = a.admit(y).unwrap();
        drop((two, three));
        assert_eq!(metrics.connections_closed.with_label_values(&["public", "peer-limit"]).get(), 1);
        assert_eq!(metrics.connections_closed.with_label_values(&["public", "limit"]).get(), 1);
        assert_eq!(a.open(), 1);
        assert_eq!(a.table().per_peer.len(), 1, "an address with no connection leaves the map");
    }

    #[test]
    fn the_sweeper_ends_idle_old_and_expired_connections() {
        let metrics = Metrics::new().unwrap();
        let bounds = Bounds {
            idle_timeout: Duration::from_secs(10),
            max_age: Duration::from_secs(100),
            ..Bounds::default_for("data")
        };
        let c = Connections::new("data", bounds, &metrics);
        let peer: IpAddr = "10.0.0.1".parse().unwrap();
        let now = Instant::now();
        let (mut busy, mut idle, mut expiring) =
            (c.admit(peer).unwrap(), c.admit(peer).unwrap(), c.admit(peer).unwrap());
        let busy_state = busy.open(&[], None, None);
        let idle_state = idle.open(&[], None, None);
        let in_5s = SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_secs() as i64 + 5;
        let expiring_state = expiring.open(&[], None, Some(in_5s));
        // 6 s: the busy one took a call; nothing ends yet.
        let _call = busy_state.request();
        c.sweep(now + Duration::from_secs(6), false);
        assert!(busy_state.ended().is_none() && idle_state.ended().is_none());
        assert_eq!(expiring_state.ended(), Some(Ended::Expired), "its certificate expired at 5 s");
        // 11 s: the quiet one is idle; the one with a call in flight is not.
        c.sweep(now + Duration::from_secs(11), false);
        assert_eq!(idle_state.ended(), Some(Ended::Idle));
        assert!(busy_state.ended().is_none());
        // One that did not drain is dropped DRAIN after it was ended.
        c.sweep(now + Duration::from_secs(12), false);
        assert!(!idle_state.kill.load(Ordering::Relaxed));
        c.sweep(now + Duration::from_secs(11) + DRAIN, false);
        assert!(idle_state.kill.load(Ordering::Relaxed));
        // Past the maximum age, even a busy connection is drained.
        c.sweep(now + Duration::from_secs(101), false);
        assert_eq!(busy_state.ended(), Some(Ended::Age));
        for reason in ["expired", "idle", "age"] {
            assert_eq!(metrics.connections_closed.with_label_values(&["data", reason]).get(), 1, "{reason}");
        }
        drop((busy, idle, expiring));
        assert_eq!((c.open(), c.table().open.len()), (0, 0));
    }

    #[test]
    fn the_first_reason_to_end_stays() {
        let s = Arc::new(ConnState::default());
        assert_eq!(s.ended(), None);
        assert!(s.end(Ended::Revoked));
        assert!(!s.end(Ended::Idle));
        assert_eq!(s.ended(), Some(Ended::Revoked));
        assert!(Ended::Revoked.refuses_calls() && !Ended::Idle.refuses_calls());
        let f = s.request();
        assert_eq!((s.requests.load(Ordering::Relaxed), s.in_flight.load(Ordering::Relaxed)), (1, 1));
        drop(f);
        assert_eq!(s.in_flight.load(Ordering::Relaxed), 0);
    }

    #[test]
    fn configured_bounds_override_the_listeners_defaults() {
        let c = BoundsConfig { idle_timeout_ms: Some(1_500), max_per_peer: Some(4), ..BoundsConfig::default() };
        let b = Bounds::of("public", &c);
        assert_eq!((b.idle_timeout, b.max_per_peer), (Duration::from_millis(1_500), 4));
        assert_eq!(b.max_connections, Bounds::default_for("public").max_connections);
        assert!(Bounds { max_connections: 0, ..b }.check("public").is_err());
        assert!(b.check("public").is_ok());
    }
}
