//! Metrics for operators, in the Prometheus text format on the operations listener.
//!
//! Label sets are bounded and never carry a personal identifier: services come from the
//! catalogue (or `none`), codes from the stable enum, outcomes are two, and the caller is an
//! enterprise number only when the organisation is registered in the policy (`unregistered`
//! otherwise, so a certificate cannot mint label values).

use prometheus::{
    Encoder, Gauge, Histogram, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge, IntGaugeVec, Opts,
    Registry, TextEncoder,
};

const LATENCY_BUCKETS: [f64; 13] = [0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0];
const STAGE_BUCKETS: [f64; 14] =
    [0.00001, 0.000025, 0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.1, 0.5, 2.5];

/// The pipeline's stages, each with its own latency histogram (handles resolved once, so the
/// request path does no label lookup).
#[derive(Debug, Clone)]
pub struct Stages {
    pub authorize: Histogram,
    pub consent: Histogram,
    pub upstream: Histogram,
    pub layout: Histogram,
    pub audit: Histogram,
}

/// Consent checks by result.
#[derive(Debug, Clone)]
pub struct ConsentChecks {
    pub valid: IntCounter,
    pub missing: IntCounter,
    pub revoked: IntCounter,
    pub expired: IntCounter,
}

/// The reasons of `connections_closed_total` (`conn::Ended` and the two refusals at accept).
pub const CLOSE_REASONS: [&str; 7] = ["revoked", "expired", "organisation", "idle", "age", "limit", "peer-limit"];

/// The kinds of `upstream_errors_total`.
pub const UPSTREAM_ERROR_KINDS: [&str; 5] = ["unavailable", "timeout", "layout", "too_large", "circuit_open"];

/// The reasons of `tls_handshake_failures_total` that [`tls_reason`] gives.
pub const TLS_REASONS: [&str; 14] = [
    "no-certificate",
    "expired",
    "not-yet-valid",
    "revoked",
    "unknown-issuer",
    "wrong-key-usage",
    "chain-too-long",
    "bad-certificate",
    "crl",
    "incompatible",
    "alert-received",
    "protocol",
    "timeout",
    "io",
];

/// The gateway's metrics.
#[derive(Debug, Clone)]
pub struct Metrics {
    registry: Registry,
    /// Calls by service, calling organisation, outcome and refusal code.
    pub requests: IntCounterVec,
    /// Time from receipt to the answer, audit commit included, by service.
    pub latency: HistogramVec,
    /// Audit records made durable, and the batches (durable writes) they took.
    /// Counters fed at each scrape from the trail's own counts (see `ops::Ops::refresh`).
    pub audit_records: IntCounter,
    pub audit_batches: IntCounter,
    /// 1 while the audit trail can be written.
    pub audit_writable: IntGauge,
    /// Records per durable batch, and the time each batch's durable write took.
    pub audit_batch_size: Histogram,
    pub audit_commit: Histogram,
    /// Version of the policy snapshot in force, and how long it has been.
    pub policy_version: IntGauge,
    /// Days before the soonest end of the certificates the gateway signed for each
    /// organisation (negative once past), by enterprise number.
    pub certificate_days_left: IntGaugeVec,
    pub policy_age: Gauge,
    /// Per-stage latency.
    pub stages: Stages,
    pub consent_checks: ConsentChecks,
    /// Failed calls to a source, by source and kind (`unavailable`, `timeout`, `layout`,
    /// `too_large`, `circuit_open`).
    pub upstream_errors: IntCounterVec,
    /// TLS handshakes refused, by listener and reason (bounded: see `tls_reason`).
    pub tls_failures: IntCounterVec,
    /// Open client connections by listener.
    pub connections: IntGaugeVec,
    /// Connections the gateway ended (or refused at accept), by listener and reason
    /// (`revoked`, `expired`, `organisation`, `idle`, `age`, `limit`, `peer-limit`).
    pub connections_closed: IntCounterVec,
    /// Reloads (SIGHUP or control plane) by outcome.
    pub reloads: IntCounterVec,
    /// 1 while a source side's circuit breaker is open, by source and side
    /// (`production`, `test`).
    pub circuit_open: IntGaugeVec,
}

/// The request counter and latency histogram of the last call on a connection, with the
/// labels they were found under: the calls of one connection mostly repeat them, and a lookup
/// by labels hashes them and takes the vector's lock, twice a call.
#[derive(Debug, Default)]
pub struct LastCall(std::sync::Mutex<Option<Children>>);

#[derive(Debug)]
struct Children {
    /// Service, caller, outcome, code.
    labels: [Box<str>; 4],
    requests: IntCounter,
    latency: Histogram,
}

impl Metrics {
    /// Counts a data-plane call (`labels`: service, caller, outcome, code) and observes its
    /// duration by service, through the children `last` holds when its labels are these.
    pub fn count_call(&self, last: &LastCall, labels: [&str; 4], seconds: f64) {
        // A connection serving calls at once (HTTP/2) may find it taken: it looks up instead.
        let mut slot = last.0.try_lock().ok();
        if let Some(Some(c)) = slot.as_deref()
            && c.labels.iter().zip(labels).all(|(held, l)| **held == *l)
        {
            c.requests.inc();
            c.latency.observe(seconds);
            return;
        }
        let requests = self.requests.with_label_values(&labels);
        let latency = self.latency.with_label_values(&labels[..1]);
        requests.inc();
        latency.observe(seconds);
        if let Some(slot) = slot.as_deref_mut() {
            *slot = Some(Children { labels: labels.map(Box::from), requests, latency });
        }
    }

    pub fn new() -> Result<Self, prometheus::Error> {
        let registry = Registry::new_custom(Some("passerelle".into()), None)?;
        let requests = IntCounterVec::new(
            Opts::new("requests_total", "Data-plane calls by service, caller, outcome and refusal code"),
            &["service", "caller", "outcome", "code"],
        )?;
        let latency = HistogramVec::new(
            HistogramOpts::new("request_duration_seconds", "Data-plane call duration, audit commit included")
                .buckets(LATENCY_BUCKETS.to_vec()),
            &["service"],
        )?;
        let stage = HistogramVec::new(
            HistogramOpts::new("stage_duration_seconds", "Time spent in one pipeline stage of a data-plane call")
                .buckets(STAGE_BUCKETS.to_vec()),
            &["stage"],
        )?;
        let stages = Stages {
            authorize: stage.with_label_values(&["authorize"]),
            consent: stage.with_label_values(&["consent"]),
            upstream: stage.with_label_values(&["upstream"]),
            layout: stage.with_label_values(&["layout"]),
            audit: stage.with_label_values(&["audit"]),
        };
        let consent = IntCounterVec::new(
            Opts::new("consent_checks_total", "Consent checks of consent-based calls, by result"),
            &["result"],
        )?;
        let consent_checks = ConsentChecks {
            valid: consent.with_label_values(&["valid"]),
            missing: consent.with_label_values(&["missing"]),
            revoked: consent.with_label_values(&["revoked"]),
            expired: consent.with_label_values(&["expired"]),
        };
        let upstream_errors = IntCounterVec::new(
            Opts::new("upstream_errors_total", "Failed calls to a source, by source and kind"),
            &["source", "kind"],
        )?;
        let tls_failures = IntCounterVec::new(
            Opts::new("tls_handshake_failures_total", "TLS handshakes refused, by listener and reason"),
            &["listener", "reason"],
        )?;
        let connections =
            IntGaugeVec::new(Opts::new("connections_active", "Open client connections, by listener"), &["listener"])?;
        let connections_closed = IntCounterVec::new(
            Opts::new("connections_closed_total", "Connections the gateway ended or refused, by listener and reason"),
            &["listener", "reason"],
        )?;
        let reloads = IntCounterVec::new(Opts::new("reloads_total", "Reloads, by outcome"), &["outcome"])?;
        let circuit_open = IntGaugeVec::new(
            Opts::new("upstream_circuit_open", "1 while the circuit breaker of a source side is open"),
            &["source", "side"],
        )?;
        let audit_batch_size = Histogram::with_opts(
            HistogramOpts::new("audit_batch_records", "Records made durable by one group commit")
                .buckets(vec![1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0, 256.0, 512.0, 1024.0]),
        )?;
        let audit_commit = Histogram::with_opts(
            HistogramOpts::new("audit_commit_seconds", "Time of one group commit: its durable write")
                .buckets(STAGE_BUCKETS.to_vec()),
        )?;
        let policy_age = Gauge::new("policy_age_seconds", "Seconds since the policy version in force was installed")?;
        let audit_records = IntCounter::new("audit_records_total", "Audit records made durable since start")?;
        let audit_batches = IntCounter::new("audit_batches_total", "Audit group commits (durable writes) since start")?;
        let audit_writable = IntGauge::new("audit_writable", "1 while the audit trail can be written")?;
        let policy_version = IntGauge::new("policy_version", "Version of the policy snapshot in force")?;
        let certificate_days_left = IntGaugeVec::new(
            Opts::new(
                "certificate_days_left",
                "Days before the soonest end of the client certificates the gateway signed for an organisation",
            ),
            &["organisation"],
        )?;
        registry.register(Box::new(certificate_days_left.clone()))?;
        registry.register(Box::new(requests.clone()))?;
        registry.register(Box::new(latency.clone()))?;
        registry.register(Box::new(audit_records.clone()))?;
        registry.register(Box::new(audit_batches.clone()))?;
        registry.register(Box::new(audit_writable.clone()))?;
        registry.register(Box::new(policy_version.clone()))?;
        registry.register(Box::new(policy_age.clone()))?;
        registry.register(Box::new(audit_batch_size.clone()))?;
        registry.register(Box::new(audit_commit.clone()))?;
        registry.register(Box::new(stage))?;
        registry.register(Box::new(consent))?;
        registry.register(Box::new(upstream_errors.clone()))?;
        registry.register(Box::new(tls_failures.clone()))?;
        registry.register(Box::new(connections.clone()))?;
        registry.register(Box::new(connections_closed.clone()))?;
        registry.register(Box::new(reloads.clone()))?;
        registry.register(Box::new(circuit_open.clone()))?;
        // Every series an alert or the dashboard reads exists from the start, at 0: `increase()`
        // over a series that appears at its first event misses that event.
        for outcome in ["ok", "failed"] {
            reloads.with_label_values(&[outcome]);
        }
        for listener in ["data", "control", "public", "ops"] {
            for reason in CLOSE_REASONS {
                connections_closed.with_label_values(&[listener, reason]);
            }
        }
        for listener in ["data", "control", "public"] {
            connections.with_label_values(&[listener]);
            for reason in TLS_REASONS {
                tls_failures.with_label_values(&[listener, reason]);
            }
        }
        Ok(Metrics {
            registry,
            requests,
            latency,
            audit_records,
            audit_batches,
            audit_writable,
            audit_batch_size,
            audit_commit,
            policy_version,
            certificate_days_left,
            policy_age,
            stages,
            consent_checks,
            upstream_errors,
            tls_failures,
            connections,
            connections_closed,
            reloads,
            circuit_open,
        })
    }

    /// The exposition text.
    /// Makes the upstream errors of every kind exist at 0 for each configured source (the
    /// breaker's gauges are set by `Upstreams::new`).
    pub fn sources<'a>(&self, sources: impl IntoIterator<Item = &'a str>) {
        for source in sources {
            for kind in UPSTREAM_ERROR_KINDS {
                self.upstream_errors.with_label_values(&[source, kind]);
            }
        }
    }

    pub fn render(&self) -> String {
        let mut buf = Vec::new();
        if let Err(e) = TextEncoder::new().encode(&self.registry.gather(), &mut buf) {
            tracing::error!(error = %e, "metrics could not be encoded");
        }
        String::from_utf8(buf).unwrap_or_default()
    }
}

/// The bounded reason label of a refused TLS handshake.
pub fn tls_reason(e: &std::io::Error) -> &'static str {
    use rustls::{CertificateError, Error};
    match e.get_ref().and_then(|i| i.downcast_ref::<Error>()) {
        Some(Error::NoCertificatesPresented) => "no-certificate",
        Some(Error::InvalidCertificate(c)) => match c {
            CertificateError::Expired | CertificateError::ExpiredContext { .. } => "expired",
            CertificateError::NotValidYet | CertificateError::NotValidYetContext { .. } => "not-yet-valid",
            CertificateError::Revoked => "revoked",
            CertificateError::UnknownIssuer => "unknown-issuer",
            CertificateError::InvalidPurpose | CertificateError::InvalidPurposeContext { .. } => "wrong-key-usage",
            // Only the gateway's chain-length limit raises it.
            CertificateError::ApplicationVerificationFailure => "chain-too-long",
            _ => "bad-certificate",
        },
        Some(Error::InvalidCertRevocationList(_)) => "crl",
        Some(Error::PeerIncompatible(_) | Error::NoApplicationProtocol) => "incompatible",
        Some(Error::AlertReceived(_)) => "alert-received",
        Some(_) => "protocol",
        None => "io",
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn a_clone_shares_the_counters() {
        let m = Metrics::new().unwrap();
        let c = m.clone();
        c.requests.with_label_values(&["s", "unregistered", "granted", ""]).inc();
        c.latency.with_label_values(&["s"]).observe(0.01);
        let text = m.render();
        assert!(
            text.contains(
                "passerelle_requests_total{caller=\"unregistered\",code=\"\",outcome=\"granted\",service=\"s\"} 1"
            ),
            "{text}"
        );
    }

    #[test]
    fn counting_through_the_last_calls_children_counts_under_each_calls_labels() {
        let m = Metrics::new().unwrap();
        let last = LastCall::default();
        let calls = [
            ["a.x", "0207123407", "granted", ""],
            ["a.x", "0207123407", "granted", ""],
            ["a.x", "0207123407", "refused", "PURPOSE_NOT_ALLOWED"],
            ["b.y", "0207123407", "granted", ""],
            ["a.x", "0207123407", "granted", ""],
            ["a.x", "unregistered", "granted", ""],
        ];
        for labels in calls {
            m.count_call(&last, labels, 0.002);
        }
        let text = m.render();
        for (series, n) in [
            ("caller=\"0207123407\",code=\"\",outcome=\"granted\",service=\"a.x\"", 3),
            ("caller=\"0207123407\",code=\"PURPOSE_NOT_ALLOWED\",outcome=\"refused\",service=\"a.x\"", 1),
            ("caller=\"0207123407\",code=\"\",outcome=\"granted\",service=\"b.y\"", 1),
            ("caller=\"unregistered\",code=\"\",outcome=\"granted\",service=\"a.x\"", 1),
        ] {
            assert!(text.contains(&format!("passerelle_requests_total{{{series}}} {n}\n")), "{series}\n{text}");
        }
        assert!(text.contains("passerelle_request_duration_seconds_count{service=\"a.x\"} 5\n"), "{text}");
        assert!(text.contains("passerelle_request_duration_seconds_count{service=\"b.y\"} 1\n"), "{text}");
    }
}
