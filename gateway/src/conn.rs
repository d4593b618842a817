//! Connections: what a client may hold open on each listener, and the end of connections
//! whose certificate or organisation no longer holds.
//!
//! Every listener (data, control, public, operations) admits a connection only within its
//! [`Bounds`] — at most `max_connections` at once, and `max_per_peer` from one address — and
//! drives it with [`drive`]: a connection that carries no request for `idle_timeout`, that is
//! older than `max_age`, whose certificate expires, or that [`Connections::recheck`] finds revoked
//! or without its organisation is shut down gracefully (HTTP/2 GOAWAY, HTTP/1.1 `Connection:
//! close` after the call in flight), and dropped if it has not drained after [`DRAIN`]. A
//! request that arrives on a connection already ended for its certificate is refused with
//! `CLIENT_CERT_REVOKED` by [`crate::pipeline::identity::Caller::org`], with its audit record.
//!
//! The cost per call is one relaxed increment of the connection's request counter and one
//! load of its state; the checks run per connection, on timers and on reloads.

use std::collections::HashMap;
use std::net::IpAddr;
use std::pin::pin;
use std::sync::atomic::{AtomicU8, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use hyper_util::server::graceful::GracefulConnection;
use rustls::server::danger::ClientCertVerifier;
use rustls_pki_types::{CertificateDer, UnixTime};
use serde::Deserialize;
use tokio::sync::{Notify, watch};
use tokio::time::Instant;

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

/// What a listener admits: a count of open connections, and one per address when bounded.
#[derive(Debug)]
pub struct Admission {
    pub bounds: Bounds,
    listener: &'static str,
    open: AtomicUsize,
    per_peer: Mutex<HashMap<IpAddr, usize>>,
    metrics: Metrics,
}

/// An admitted connection; it leaves the counts when dropped.
#[derive(Debug)]
pub struct Admitted {
    admission: Arc<Admission>,
    peer: IpAddr,
}

impl Admission {
    pub fn new(listener: &'static str, bounds: Bounds, metrics: Metrics) -> Arc<Self> {
        Arc::new(Admission { bounds, listener, open: AtomicUsize::new(0), per_peer: Mutex::default(), metrics })
    }

    /// Connections open now.
    pub fn open(&self) -> usize {
        self.open.load(Ordering::Acquire)
    }

    /// Admits a connection from `peer`, or counts why not (the caller closes the socket).
    pub fn admit(self: &Arc<Self>, peer: IpAddr) -> Option<Admitted> {
        if self.open.fetch_add(1, Ordering::AcqRel) >= self.bounds.max_connections {
            self.open.fetch_sub(1, Ordering::AcqRel);
            self.metrics.connections_closed.with_label_values(&[self.listener, "limit"]).inc();
            return None;
        }
        if self.bounds.max_per_peer > 0 {
            let mut map = self.per_peer.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
            let n = map.entry(peer).or_insert(0);
            if *n >= self.bounds.max_per_peer {
                drop(map);
                self.open.fetch_sub(1, Ordering::AcqRel);
                self.metrics.connections_closed.with_label_values(&[self.listener, "peer-limit"]).inc();
                return None;
            }
            *n += 1;
        }
        Some(Admitted { admission: self.clone(), peer })
    }
}

impl Drop for Admitted {
    fn drop(&mut self) {
        let a = &self.admission;
        if a.bounds.max_per_peer > 0 {
            let mut map = a.per_peer.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
            if let Some(n) = map.get_mut(&self.peer) {
                *n -= 1;
                if *n == 0 {
                    map.remove(&self.peer);
                }
            }
        }
        a.open.fetch_sub(1, Ordering::AcqRel);
    }
}

/// The state of one open connection, shared by its driver, its requests and the registry.
#[derive(Debug, Default)]
pub struct ConnState {
    /// 0 while open; otherwise the [`Ended`] reason.
    ended: AtomicU8,
    /// Requests received so far (for the idle check).
    requests: AtomicU64,
    /// Requests still being answered.
    in_flight: AtomicUsize,
    wake: Notify,
}

impl ConnState {
    /// Why the connection was ended, once it was.
    pub fn ended(&self) -> Option<Ended> {
        Ended::from_u8(self.ended.load(Ordering::Acquire))
    }

    /// Ends the connection for `why` (the first reason stays), waking its driver.
    pub fn end(&self, why: Ended) {
        if self.ended.compare_exchange(0, why as u8, Ordering::AcqRel, Ordering::Acquire).is_ok() {
            self.wake.notify_one();
        }
    }

    /// Counts a request for the time it is answered.
    pub fn request(self: &Arc<Self>) -> InFlight {
        self.requests.fetch_add(1, Ordering::Relaxed);
        self.in_flight.fetch_add(1, Ordering::Relaxed);
        InFlight(self.clone())
    }
}

/// A request being answered; it leaves the count when dropped.
#[derive(Debug)]
pub struct InFlight(Arc<ConnState>);

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.in_flight.fetch_sub(1, Ordering::Relaxed);
    }
}

/// What the registry knows of one mutual-TLS connection.
#[derive(Debug)]
struct Peer {
    chain: Vec<CertificateDer<'static>>,
    org: Option<policies::ids::Kbo>,
    state: Arc<ConnState>,
}

/// The open mutual-TLS connections (data and control planes), so that a reload or a policy
/// change can end those whose certificate or organisation no longer holds.
#[derive(Debug, Default)]
pub struct Connections {
    open: Mutex<HashMap<u64, Peer>>,
    next: AtomicU64,
}

/// A connection's place in the registry; it leaves when dropped.
#[derive(Debug)]
pub struct Listed {
    registry: Arc<Connections>,
    id: u64,
}

impl Drop for Listed {
    fn drop(&mut self) {
        self.registry.open.lock().unwrap_or_else(std::sync::PoisonError::into_inner).remove(&self.id);
    }
}

impl Connections {
    pub fn register(
        self: &Arc<Self>,
        chain: &[CertificateDer<'_>],
        org: Option<policies::ids::Kbo>,
        state: Arc<ConnState>,
    ) -> Listed {
        let id = self.next.fetch_add(1, Ordering::Relaxed);
        let chain = chain.iter().map(|c| c.clone().into_owned()).collect();
        self.open.lock().unwrap_or_else(std::sync::PoisonError::into_inner).insert(id, Peer { chain, org, state });
        Listed { registry: self.clone(), id }
    }

    /// Verifies every open connection's certificate chain again with `verifier` (the CRLs and
    /// CAs now in force) and checks its organisation with `known`; ends those that fail.
    /// Returns how many it ended.
    pub fn recheck(&self, verifier: &dyn ClientCertVerifier, known: impl Fn(policies::ids::Kbo) -> bool) -> usize {
        let now = UnixTime::now();
        let peers: Vec<(Vec<CertificateDer<'static>>, Option<policies::ids::Kbo>, Arc<ConnState>)> = self
            .open
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .values()
            .filter(|p| p.state.ended().is_none())
            .map(|p| (p.chain.clone(), p.org, p.state.clone()))
            .collect();
        let mut ended = 0;
        for (chain, org, state) in peers {
            let why = match chain.split_first() {
                Some((leaf, rest)) => match verifier.verify_client_cert(leaf, rest, now) {
                    Err(rustls::Error::InvalidCertificate(rustls::CertificateError::Expired)) => Some(Ended::Expired),
                    Err(_) => Some(Ended::Revoked),
                    Ok(_) if org.is_some_and(|k| !known(k)) => Some(Ended::Organisation),
                    Ok(_) => None,
                },
                None => Some(Ended::Revoked),
            };
            if let Some(why) = why {
                state.end(why);
                ended += 1;
            }
        }
        ended
    }

    /// Ends the open connections whose organisation `known` no longer knows (it left the
    /// policy); returns how many. No certificate is verified again: a policy change does not
    /// change the CAs or CRLs.
    pub fn recheck_orgs(&self, known: impl Fn(policies::ids::Kbo) -> bool) -> usize {
        let open = self.open.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        let mut ended = 0;
        for p in open.values() {
            if p.state.ended().is_none() && p.org.is_some_and(|k| !known(k)) {
                p.state.end(Ended::Organisation);
                ended += 1;
            }
        }
        ended
    }

    /// Open mutual-TLS connections.
    pub fn len(&self) -> usize {
        self.open.lock().unwrap_or_else(std::sync::PoisonError::into_inner).len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// Drives `conn` to its end within `bounds`: shuts it down gracefully when it has been idle
/// for the idle timeout, when it reaches the maximum age, when `not_after` (Unix seconds)
/// passes, when its state is ended (a reload found its certificate revoked), or when
/// `shutdown` turns true; drops it if it has not drained [`DRAIN`] later. Counts why it ended.
pub async fn drive<C>(
    conn: C,
    state: &ConnState,
    bounds: &Bounds,
    not_after: Option<i64>,
    mut shutdown: watch::Receiver<bool>,
    closed: &prometheus::IntCounterVec,
    listener: &'static str,
) -> Result<(), C::Error>
where
    C: GracefulConnection,
{
    let mut conn = pin!(conn);
    let started = Instant::now();
    let age_limit = started + bounds.max_age;
    let expiry = not_after.map(|t| {
        let now = SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs());
        started + Duration::from_secs(u64::try_from(t).unwrap_or(0).saturating_sub(now))
    });
    // The idle check looks at the request counter every quarter of the idle timeout.
    let tick = (bounds.idle_timeout / 4).max(Duration::from_millis(50));
    let (mut seen, mut quiet_since) = (0u64, started);
    let mut drain_until: Option<Instant> = None;
    loop {
        let next = match drain_until {
            Some(d) => d,
            None => {
                let mut n = (Instant::now() + tick).min(age_limit);
                if let Some(e) = expiry {
                    n = n.min(e);
                }
                n
            }
        };
        let why = tokio::select! {
            done = conn.as_mut() => return done,
            () = state.wake.notified(), if drain_until.is_none() => state.ended(),
            _ = shutdown.changed(), if drain_until.is_none() => Some(Ended::Shutdown),
            () = tokio::time::sleep_until(next) => {
                if drain_until.is_some() {
                    // It did not drain in time: drop it.
                    tracing::debug!(listener, "connection did not drain; dropped");
                    return Ok(());
                }
                let now = Instant::now();
                let requests = state.requests.load(Ordering::Relaxed);
                if requests != seen || state.in_flight.load(Ordering::Relaxed) > 0 {
                    (seen, quiet_since) = (requests, now);
                }
                if expiry.is_some_and(|e| now >= e) {
                    state.end(Ended::Expired);
                    Some(Ended::Expired)
                } else if now >= age_limit {
                    Some(Ended::Age)
                } else if now.duration_since(quiet_since) >= bounds.idle_timeout {
                    Some(Ended::Idle)
                } else {
                    None
                }
            }
        };
        if let Some(why) = why {
            if why != Ended::Shutdown {
                closed.with_label_values(&[listener, why.as_str()]).inc();
            }
            conn.as_mut().graceful_shutdown();
            drain_until = Some(Instant::now() + DRAIN);
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn admission_bounds_the_listener_and_each_address() {
        let metrics = Metrics::new().unwrap();
        let bounds = Bounds { max_connections: 3, max_per_peer: 2, ..Bounds::default_for("public") };
        let a = Admission::new("public", bounds, metrics.clone());
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
        assert_eq!(a.open.load(Ordering::Relaxed), 1);
        assert_eq!(a.per_peer.lock().unwrap().len(), 1, "an address with no connection leaves the map");
    }

    #[test]
    fn the_first_reason_to_end_stays() {
        let s = Arc::new(ConnState::default());
        assert_eq!(s.ended(), None);
        s.end(Ended::Revoked);
        s.end(Ended::Idle);
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
