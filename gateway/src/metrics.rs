//! Metrics for operators, in the Prometheus text format on the operations listener.
//!
//! Label sets are bounded and never carry a personal identifier: services come from the
//! catalogue (or `none`), codes from the stable enum, outcomes are two, and the caller is an
//! enterprise number only when the organisation is registered in the policy (`unregistered`
//! otherwise, so a certificate cannot mint label values).

use prometheus::{Encoder, HistogramOpts, HistogramVec, IntCounterVec, IntGauge, Opts, Registry, TextEncoder};

/// The gateway's metrics.
#[derive(Debug, Clone)]
pub struct Metrics {
    registry: Registry,
    /// Calls by service, calling organisation, outcome and refusal code.
    pub requests: IntCounterVec,
    /// Time from receipt to the answer, audit commit included, by service.
    pub latency: HistogramVec,
    /// Audit records made durable, and the batches (fdatasync) they took.
    pub audit_records: IntGauge,
    pub audit_batches: IntGauge,
    /// 1 while the audit trail can be written.
    pub audit_writable: IntGauge,
    /// Version of the policy snapshot in force.
    pub policy_version: IntGauge,
}

impl Metrics {
    pub fn new() -> Result<Self, prometheus::Error> {
        let registry = Registry::new_custom(Some("passerelle".into()), None)?;
        let requests = IntCounterVec::new(
            Opts::new("requests_total", "Data-plane calls by service, caller, outcome and refusal code"),
            &["service", "caller", "outcome", "code"],
        )?;
        let latency = HistogramVec::new(
            HistogramOpts::new("request_duration_seconds", "Data-plane call duration, audit commit included")
                .buckets(vec![0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0]),
            &["service"],
        )?;
        let audit_records = IntGauge::new("audit_records_total", "Audit records made durable since start")?;
        let audit_batches = IntGauge::new("audit_batches_total", "Audit group commits (fdatasync) since start")?;
        let audit_writable = IntGauge::new("audit_writable", "1 while the audit trail can be written")?;
        let policy_version = IntGauge::new("policy_version", "Version of the policy snapshot in force")?;
        registry.register(Box::new(requests.clone()))?;
        registry.register(Box::new(latency.clone()))?;
        registry.register(Box::new(audit_records.clone()))?;
        registry.register(Box::new(audit_batches.clone()))?;
        registry.register(Box::new(audit_writable.clone()))?;
        registry.register(Box::new(policy_version.clone()))?;
        Ok(Metrics { registry, requests, latency, audit_records, audit_batches, audit_writable, policy_version })
    }

    /// The exposition text.
    pub fn render(&self) -> String {
        let mut buf = Vec::new();
        if let Err(e) = TextEncoder::new().encode(&self.registry.gather(), &mut buf) {
            tracing::error!(error = %e, "metrics could not be encoded");
        }
        String::from_utf8(buf).unwrap_or_default()
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
}
