//! Refused TLS handshakes in the trail (seed 004 §3 and §6: "every access *or attempted
//! access* is logged"). A refused handshake leaves no HTTP request, so the listener notes it
//! here, and once a second the attempts of that second are appended to the trail, one record
//! per (listener, reason, presented certificate, peer address) with their count: a flood costs
//! one record per distinct attempt and second, and at most [`MAX_KEYS`] of those (the rest are
//! counted in one record saying so).
//!
//! The certificate a client presented is known only to the certificate verifier, inside the
//! handshake: the verifier puts a refused end-entity certificate in the task-local
//! [`PRESENTED`], which the listener sets up around each handshake and reads when it fails.

use std::cell::RefCell;
use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use super::{AuditTrail, Outcome, Record, RecordKind};

tokio::task_local! {
    /// The DER of the end-entity certificate the verifier refused in this handshake.
    pub static PRESENTED: RefCell<Option<Vec<u8>>>;
}

/// Distinct attempts recorded per second; more are counted in one overflow record.
pub const MAX_KEYS: usize = 1024;

/// Called by the certificate verifier when it refuses `end_entity`.
pub fn note_refused_certificate(end_entity: &[u8]) {
    let _ = PRESENTED.try_with(|p| *p.borrow_mut() = Some(end_entity.to_vec()));
}

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct Key {
    listener: &'static str,
    reason: &'static str,
    /// SHA-256 of the presented certificate's DER, hex.
    fingerprint: Option<String>,
    peer: Option<IpAddr>,
}

#[derive(Debug, Default)]
struct Tally {
    count: u64,
    /// The enterprise number the certificate names, when it names a valid one.
    kbo: Option<String>,
    subject: Option<String>,
    issuer: Option<String>,
}

/// The attempts of the current second, waiting to be written.
#[derive(Debug, Default)]
pub struct Attempts {
    pending: Mutex<(HashMap<Key, Tally>, u64)>,
}

/// What a certificate says about itself, for the record (never trusted: it was refused).
fn describe(der: &[u8]) -> (String, Option<String>, Option<String>, Option<String>) {
    use sha2::Digest as _;
    let fingerprint = super::format::hex(&sha2::Sha256::digest(der));
    let (subject, issuer) = match x509_parser::parse_x509_certificate(der) {
        Ok((_, c)) => (Some(c.subject().to_string()), Some(c.issuer().to_string())),
        Err(_) => (None, None),
    };
    let kbo = certs::OrgIdentity::from_der(der).ok().map(|id| {
        let mut d = [0u8; 10];
        id.kbo.digits(&mut d).to_owned()
    });
    (fingerprint, kbo, subject, issuer)
}

impl Attempts {
    /// Notes one refused handshake on `listener` for `reason`, from `peer`, with the
    /// certificate it presented (if the verifier saw one).
    pub fn note(&self, listener: &'static str, reason: &'static str, presented: Option<&[u8]>, peer: IpAddr) {
        let described = presented.map(describe);
        let Ok(mut pending) = self.pending.lock() else { return };
        let (map, overflow) = &mut *pending;
        let key = Key { listener, reason, fingerprint: described.as_ref().map(|d| d.0.clone()), peer: Some(peer) };
        if !map.contains_key(&key) && map.len() >= MAX_KEYS {
            *overflow += 1;
            return;
        }
        let t = map.entry(key).or_default();
        t.count += 1;
        if let Some((_, kbo, subject, issuer)) = described {
            (t.kbo, t.subject, t.issuer) = (kbo, subject, issuer);
        }
    }

    /// Appends the attempts noted since the last flush, one durable record each.
    pub async fn flush(&self, trail: &AuditTrail, time_ms: u64) {
        let (map, overflow) = match self.pending.lock() {
            Ok(mut p) => (std::mem::take(&mut p.0), std::mem::take(&mut p.1)),
            Err(_) => return,
        };
        let mut n = 0;
        for (key, t) in map {
            n += 1;
            let mut r = Record::control(
                RecordKind::HandshakeRefused,
                time_ms,
                format!("handshake-{}-{time_ms}-{n}", key.listener),
                t.kbo,
                key.fingerprint,
                &format!("TLS handshake on {}", key.listener),
            );
            r.outcome = Outcome::Refused;
            r.status = 0;
            r.code = Some(key.reason.to_owned());
            let peer = key.peer.map_or("an unknown address".to_owned(), |p| p.to_string());
            let cert = match (t.subject, t.issuer) {
                (Some(s), Some(i)) => format!("certificate subject: {s}; issuer: {i}"),
                _ => "no certificate the gateway could read".to_owned(),
            };
            r.justification = Some(format!("{} attempt(s) from {peer}; {cert}", t.count));
            if let Err(e) = trail.append(&r).await {
                tracing::warn!(error = %e, "a refused handshake could not be recorded");
            }
        }
        if overflow > 0 {
            let mut r = Record::control(
                RecordKind::HandshakeRefused,
                time_ms,
                format!("handshake-overflow-{time_ms}"),
                None,
                None,
                "TLS handshake",
            );
            r.outcome = Outcome::Refused;
            r.status = 0;
            r.code = Some("many".to_owned());
            r.justification =
                Some(format!("{overflow} further attempt(s) in this second, beyond {MAX_KEYS} distinct ones"));
            if let Err(e) = trail.append(&r).await {
                tracing::warn!(error = %e, "refused handshakes could not be recorded");
            }
        }
    }

    /// Flushes once a second until `shutdown` turns true, then one last time.
    pub async fn run(self: Arc<Self>, trail: Arc<AuditTrail>, mut shutdown: tokio::sync::watch::Receiver<bool>) {
        let mut tick = tokio::time::interval(Duration::from_secs(1));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = tick.tick() => {}
                _ = shutdown.changed() => break,
            }
            self.flush(&trail, now_ms()).await;
        }
        self.flush(&trail, now_ms()).await;
    }
}

fn now_ms() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64)
}
