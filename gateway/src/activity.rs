//! The last hour of the data plane, from the metrics the gateway already keeps: calls and
//! refusals by code, minute by minute, and the 99th percentile of each service's duration.
//!
//! The counters are cumulative; once a minute a sample of them is kept (an hour's worth), and
//! the last hour is the difference between the counters now and the oldest sample within the
//! hour (since the start, while the gateway has run less than an hour). Reading it adds nothing
//! to the data plane's path: the calls only bump the counters they always did.

use std::collections::{BTreeMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use prometheus::core::Collector;
use prometheus::{HistogramVec, IntCounterVec};
use serde_json::{Value, json};
use tokio::sync::watch;

use crate::admin::now_ms;

const MINUTE_MS: u64 = 60_000;
const HOUR_MS: u64 = 60 * MINUTE_MS;

/// The counters at one moment.
#[derive(Debug, Clone, Default)]
struct Sample {
    at_ms: u64,
    /// Calls by refusal code ("" for granted calls).
    by_code: BTreeMap<String, u64>,
    /// By service: the calls and the cumulative count of each latency bucket (its upper bound
    /// in seconds).
    services: BTreeMap<String, (u64, Vec<(f64, u64)>)>,
}

impl Sample {
    fn calls(&self) -> u64 {
        self.by_code.values().sum()
    }

    fn refused(&self) -> u64 {
        self.by_code.iter().filter(|(c, _)| !c.is_empty()).map(|(_, n)| n).sum()
    }
}

/// The samples and the counters they come from.
#[derive(Debug)]
pub struct Activity {
    requests: IntCounterVec,
    latency: HistogramVec,
    started_ms: u64,
    samples: Mutex<VecDeque<Sample>>,
}

fn rfc3339(ms: u64) -> String {
    crate::admin::rfc3339(ms).unwrap_or_default()
}

impl Activity {
    pub fn new(metrics: &crate::metrics::Metrics) -> Arc<Self> {
        Arc::new(Activity {
            requests: metrics.requests.clone(),
            latency: metrics.latency.clone(),
            started_ms: now_ms(),
            samples: Mutex::new(VecDeque::new()),
        })
    }

    fn sample(&self, at_ms: u64) -> Sample {
        let mut s = Sample { at_ms, ..Sample::default() };
        for family in self.requests.collect() {
            for m in family.get_metric() {
                let code = m.get_label().iter().find(|l| l.name() == "code").map(|l| l.value().to_owned());
                *s.by_code.entry(code.unwrap_or_default()).or_default() += m.get_counter().get_value() as u64;
            }
        }
        for family in self.latency.collect() {
            for m in family.get_metric() {
                let Some(service) = m.get_label().iter().find(|l| l.name() == "service") else { continue };
                let h = m.get_histogram();
                let buckets = h.get_bucket().iter().map(|b| (b.upper_bound(), b.cumulative_count())).collect();
                s.services.insert(service.value().to_owned(), (h.get_sample_count(), buckets));
            }
        }
        s
    }

    /// Keeps a sample a minute, an hour's worth, until `shutdown`.
    pub async fn run(self: Arc<Self>, mut shutdown: watch::Receiver<bool>) {
        let minute = Duration::from_millis(MINUTE_MS);
        let mut tick = tokio::time::interval_at(tokio::time::Instant::now() + minute, minute);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
        loop {
            tokio::select! {
                _ = tick.tick() => {}
                _ = shutdown.changed() => return,
            }
            let sample = self.sample(now_ms());
            let mut samples = self.samples.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
            samples.push_back(sample);
            while samples.front().is_some_and(|s| s.at_ms + HOUR_MS + MINUTE_MS < now_ms()) {
                samples.pop_front();
            }
        }
    }

    /// The last hour (or since the start), as `GET /activity` answers it.
    pub fn last_hour(&self) -> Value {
        let now = now_ms();
        let current = self.sample(now);
        let mut points: Vec<Sample> = {
            let samples = self.samples.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
            samples.iter().filter(|s| s.at_ms + HOUR_MS >= now).cloned().collect()
        };
        if self.started_ms + HOUR_MS > now || points.is_empty() {
            // Less than an hour since the start: everything counted since (from zero).
            points.insert(0, Sample { at_ms: self.started_ms, ..Sample::default() });
        }
        points.push(current);
        let (first, last) = (&points[0], &points[points.len() - 1]);
        let delta = |code: &str| {
            last.by_code.get(code).copied().unwrap_or(0).saturating_sub(first.by_code.get(code).copied().unwrap_or(0))
        };
        let mut refusals: Vec<(String, u64)> = last
            .by_code
            .keys()
            .filter(|c| !c.is_empty())
            .map(|c| (c.clone(), delta(c)))
            .filter(|(_, n)| *n > 0)
            .collect();
        refusals.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(&b.0)));
        let minutes: Vec<Value> = points
            .windows(2)
            .map(|w| {
                json!({
                    "end": rfc3339(w[1].at_ms),
                    "calls": w[1].calls().saturating_sub(w[0].calls()),
                    "refused": w[1].refused().saturating_sub(w[0].refused()),
                })
            })
            .collect();
        let services: Vec<Value> = last
            .services
            .iter()
            .map(|(name, (count, buckets))| {
                let (count0, buckets0) = first.services.get(name).cloned().unwrap_or_default();
                let calls = count.saturating_sub(count0);
                let wanted = (calls as f64 * 0.99).ceil() as u64;
                let p99 = (calls > 0)
                    .then(|| {
                        buckets.iter().enumerate().find_map(|(i, (bound, n))| {
                            let before = buckets0.get(i).map_or(0, |b| b.1);
                            (n.saturating_sub(before) >= wanted).then_some(bound * 1000.0)
                        })
                    })
                    .flatten();
                json!({ "service": name, "calls": calls, "p99_ms": p99 })
            })
            .filter(|s| s["calls"].as_u64().unwrap_or(0) > 0)
            .collect();
        json!({
            "from": rfc3339(first.at_ms),
            "to": rfc3339(now),
            "calls": last.calls().saturating_sub(first.calls()),
            "refused": last.refused().saturating_sub(first.refused()),
            "refusals": refusals.iter().map(|(code, n)| json!({ "code": code, "count": n })).collect::<Vec<_>>(),
            "minutes": minutes,
            "services": services,
        })
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn the_last_hour_counts_calls_refusals_and_each_services_p99() {
        let metrics = crate::metrics::Metrics::new().unwrap();
        let activity = Activity::new(&metrics);
        for _ in 0..98 {
            metrics.requests.with_label_values(&["a.svc", "x", "granted", ""]).inc();
            metrics.latency.with_label_values(&["a.svc"]).observe(0.002);
        }
        for _ in 0..2 {
            metrics.requests.with_label_values(&["a.svc", "x", "refused", "NO_LEGAL_BASIS"]).inc();
            metrics.latency.with_label_values(&["a.svc"]).observe(0.2);
        }
        metrics.requests.with_label_values(&["b.svc", "y", "refused", "CONSENT_MISSING"]).inc();
        metrics.latency.with_label_values(&["b.svc"]).observe(0.0004);
        let h = activity.last_hour();
        assert_eq!((h["calls"].as_u64(), h["refused"].as_u64()), (Some(101), Some(3)));
        assert_eq!(
            h["refusals"],
            json!([{ "code": "NO_LEGAL_BASIS", "count": 2 }, { "code": "CONSENT_MISSING", "count": 1 }])
        );
        // a.svc: 98 of its 100 calls under 2.5 ms, so the 99th is a slow one: the 250 ms
        // bucket; b.svc's one call is under 0.5 ms.
        assert_eq!(
            h["services"],
            json!([
                { "service": "a.svc", "calls": 100, "p99_ms": 250.0 },
                { "service": "b.svc", "calls": 1, "p99_ms": 0.5 },
            ])
        );
        assert_eq!(h["minutes"].as_array().unwrap().len(), 1);
        // A sample taken now: what comes after it is the next minute's.
        activity.samples.lock().unwrap().push_back(activity.sample(now_ms()));
        metrics.requests.with_label_values(&["a.svc", "x", "granted", ""]).inc();
        let h = activity.last_hour();
        assert_eq!(h["calls"].as_u64(), Some(102));
        let minutes = h["minutes"].as_array().unwrap();
        assert_eq!((minutes.len(), minutes[1]["calls"].as_u64()), (2, Some(1)));
    }
}
