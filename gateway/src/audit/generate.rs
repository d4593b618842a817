//! A synthetic trail of any size (`passerelle audit generate`), for measuring the index and
//! the queries at ten years of traffic, and for tests at small sizes.
//!
//! Every record goes through the real writer ([`AuditTrail::append`]): canonical bytes, hash
//! chain, checkpoints signed with the trail's key, group commit, and the index the store
//! keeps. So what is generated verifies with `passerelle audit verify` and answers through
//! the API like a trail the gateway wrote itself; only the calls never happened.
//!
//! The trail is a pure function of its [`Plan`]: record `i` (0-based) is a data call by
//! organisation [`Plan::caller`]`(i)` about person [`Plan::subject`]`(i)` at
//! [`Plan::time_ms`]`(i)`, times spread evenly over `years` up to `end_ms`. A test can
//! therefore count what a query must find without reading the trail.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

use policies::ids::{Kbo, Niss};

use super::{AuditError, AuditTrail, Outcome, Record, RecordKind, SubjectRef};

/// What to generate.
#[derive(Debug, Clone, Copy)]
pub struct Plan {
    pub records: u64,
    /// The records' times span this many years (of 365.25 days) up to `end_ms`.
    pub years: u32,
    /// Distinct persons the records are about (at most [`MAX_SUBJECTS`]).
    pub subjects: u64,
    /// Distinct calling organisations (at most [`MAX_ORGANISATIONS`]).
    pub organisations: u64,
    /// The time of the last record (Unix milliseconds).
    pub end_ms: u64,
}

/// Distinct synthetic national numbers [`Plan::subject`] can make.
pub const MAX_SUBJECTS: u64 = 90 * 12 * 28 * 998;
/// Distinct synthetic enterprise numbers [`Plan::caller`] can make.
pub const MAX_ORGANISATIONS: u64 = 1_000_000;

const YEAR_MS: u64 = 31_557_600_000;

/// The services the synthetic calls are spread over, with a grant and purpose each.
const CALLS: [(&str, &str, &str, &str, &str); 3] = [
    ("sigedis.pensions", "GET /sigedis/pensions", "CSI/SSH/19/004", "sigedis-fi", "SUPPLEMENTARY_PENSION_INFO"),
    ("accounts.account", "GET /accounts/account", "VL/PROT/2022/031", "accounts-agency-a", "SUBSIDY_PAYMENT"),
    ("rn.person", "GET /rn/person", "BOSA/LRA/2024", "lra-person-search", "LRA_REGISTRATION"),
];

/// A bijective scramble of `0..n` (an affine map modulo `n` with a multiplier prime to it), so
/// that consecutive records are about unrelated persons and organisations.
fn scramble(i: u64, n: u64) -> u64 {
    let mut a = 0x9E37_79B9_7F4A_7C15u64 % n.max(1);
    while gcd(a, n) != 1 {
        a += 1;
    }
    ((u128::from(i) * u128::from(a) + 12_345) % u128::from(n.max(1))) as u64
}

fn gcd(mut a: u64, mut b: u64) -> u64 {
    while b != 0 {
        (a, b) = (b, a % b);
    }
    a
}

impl Plan {
    /// Refuses a plan the numbering cannot honour.
    pub fn check(&self) -> Result<(), String> {
        if self.records == 0 {
            return Err("records: at least one".into());
        }
        if self.subjects == 0 || self.subjects > MAX_SUBJECTS {
            return Err(format!("subjects: between 1 and {MAX_SUBJECTS}"));
        }
        if self.organisations == 0 || self.organisations > MAX_ORGANISATIONS {
            return Err(format!("organisations: between 1 and {MAX_ORGANISATIONS}"));
        }
        if self.years == 0 || u64::from(self.years) * YEAR_MS >= self.end_ms {
            return Err("years: at least one, and not before 1970".into());
        }
        Ok(())
    }

    /// The person number `j` (`0..subjects`): a valid national number born 1930–2019.
    pub fn person(j: u64) -> Niss {
        let year = 1930 + (j % 90) as u16;
        let month = 1 + ((j / 90) % 12) as u8;
        let day = 1 + ((j / 1_080) % 28) as u8;
        let serial = 1 + ((j / 30_240) % 998) as u16;
        Niss::from_parts(year, month, day, serial).unwrap_or_else(|| unreachable!("parts in range"))
    }

    /// The organisation number `k` (`0..organisations`): a valid enterprise number.
    pub fn organisation(k: u64) -> Kbo {
        Kbo::from_first8(18_000_000 + k as u32).unwrap_or_else(|| unreachable!("a first-8 in range"))
    }

    /// Which person record `i` is about.
    pub fn subject_index(&self, i: u64) -> u64 {
        scramble(i, self.subjects)
    }

    /// Which organisation made call `i`.
    pub fn caller_index(&self, i: u64) -> u64 {
        scramble(i / 7, self.organisations)
    }

    pub fn subject(&self, i: u64) -> Niss {
        Self::person(self.subject_index(i))
    }

    pub fn caller(&self, i: u64) -> Kbo {
        Self::organisation(self.caller_index(i))
    }

    /// The time of record `i`: evenly spread, never decreasing.
    pub fn time_ms(&self, i: u64) -> u64 {
        let span = u64::from(self.years) * YEAR_MS;
        let start = self.end_ms - span;
        start + (u128::from(i) * u128::from(span) / u128::from(self.records)) as u64
    }

    /// Record `i`.
    pub fn record(&self, i: u64) -> Record {
        let (service, operation, basis, grant, purpose) = CALLS[(i % CALLS.len() as u64) as usize];
        let (mut n, mut k) = ([0u8; 11], [0u8; 10]);
        let refused = i % 50 == 49;
        Record {
            kind: RecordKind::DataCall,
            time_ms: self.time_ms(i),
            request_id: format!("gen-{i}"),
            trace_id: None,
            caller: Some(self.caller(i).digits(&mut k).to_owned()),
            cert_fingerprint: None,
            end_user: Some(format!("case-handler-{}", i % 97)),
            environment: Some("production".into()),
            service: Some(service.into()),
            operation: operation.into(),
            legal_basis: Some(basis.into()),
            grant: Some(grant.into()),
            purpose: Some(purpose.into()),
            subjects: vec![SubjectRef::Person(self.subject(i).digits(&mut n).to_owned())],
            fields: if refused { vec![] } else { vec!["names".into(), "address".into()] },
            consent_id: None,
            outcome: if refused { Outcome::Refused } else { Outcome::Granted },
            status: if refused { 403 } else { 200 },
            code: refused.then(|| "PURPOSE_NOT_ALLOWED".into()),
            upstream_status: (!refused).then_some(200),
            latency_us: 400 + i % 900,
            justification: None,
        }
    }
}

/// What a generation did.
#[derive(Debug, Clone, Copy)]
pub struct Generated {
    pub records: u64,
    pub seconds: f64,
}

/// Records the generator lets wait for the indexer thread before it writes more, unless told
/// otherwise (about 0.1 GB of queued index entries). Unpaced, the generator wrote faster than
/// the index took the records, and a 10⁸-record trail peaked at 14 GB of memory.
pub const INDEX_BACKLOG: u64 = 262_144;

/// Appends the plan's records to `trail`, `in_flight` at a time (the writer commits them in
/// groups, as it does the calls of a loaded gateway), reporting progress to `progress` every
/// million records. Records keep the plan's order within each of the `in_flight` lanes; across
/// lanes the writer interleaves them, as it does concurrent calls. A lane waits while more
/// than `backlog` records wait for the indexer ([`INDEX_BACKLOG`] by default).
pub async fn generate(
    trail: Arc<AuditTrail>,
    plan: Plan,
    in_flight: usize,
    backlog: u64,
    progress: impl Fn(u64) + Send + Sync + 'static,
) -> Result<Generated, AuditError> {
    let started = Instant::now();
    let next = Arc::new(AtomicU64::new(0));
    let progress = Arc::new(progress);
    let mut lanes = tokio::task::JoinSet::new();
    for _ in 0..in_flight.max(1) {
        let (trail, next, progress) = (trail.clone(), next.clone(), progress.clone());
        lanes.spawn(async move {
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                if i >= plan.records {
                    return Ok::<(), AuditError>(());
                }
                while trail.status.index_queue.load(Ordering::Relaxed) > backlog {
                    tokio::time::sleep(std::time::Duration::from_millis(2)).await;
                }
                trail.append(&plan.record(i)).await?;
                if (i + 1) % 1_000_000 == 0 {
                    progress(i + 1);
                }
            }
        });
    }
    while let Some(lane) = lanes.join_next().await {
        lane.map_err(|_| AuditError::Unavailable)??;
    }
    Ok(Generated { records: plan.records, seconds: started.elapsed().as_secs_f64() })
}

/// Bytes of the files directly under `dir` (a trail, or an index's runs), leaving out the
/// trail's prepared next segment (zeros written ahead, [`super::spare`]).
pub fn dir_bytes(dir: &std::path::Path) -> u64 {
    let Ok(entries) = std::fs::read_dir(dir) else { return 0 };
    entries
        .filter_map(Result::ok)
        .filter(|e| e.file_name() != super::spare::SPARE_NAME)
        .filter_map(|e| e.metadata().ok())
        .filter(|m| m.is_file())
        .map(|m| m.len())
        .sum()
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    /// Every record handed to the indexer is counted out when it takes it: a count that
    /// drifted up would at last stop the generator for good. Paced to a small backlog, the
    /// generator still finishes.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn the_index_queue_is_empty_once_everything_is_indexed() {
        let dir = tempfile::tempdir().unwrap();
        let cfg = crate::config::AuditConfig {
            dir: dir.path().join("audit"),
            signing_key: dir.path().join("audit-signing.key"),
            ..Default::default()
        };
        crate::audit::trail::load_or_create_key(&cfg.signing_key).unwrap();
        let store = Arc::new(crate::store::SledStore::open(&dir.path().join("store")).unwrap());
        let (trail, _) = crate::audit::open(&cfg, store.clone()).unwrap();
        let trail = Arc::new(trail);
        let plan = Plan { records: 20_000, years: 1, subjects: 500, organisations: 20, end_ms: 1_800_000_000_000 };
        // A backlog of 1,000 records: the lanes wait for the indexer many times over.
        let run = generate(trail.clone(), plan, 64, 1_000, |_| {});
        let done = tokio::time::timeout(std::time::Duration::from_secs(120), run).await;
        assert!(done.is_ok(), "the generator waited for an indexer that had taken everything");
        let done = done.unwrap().unwrap();
        assert_eq!(done.records, 20_000);
        let indexed = tokio::task::spawn_blocking({
            let (trail, store) = (trail.clone(), store.clone());
            move || trail.wait_indexed(store.as_ref(), std::time::Duration::from_secs(60))
        })
        .await
        .unwrap();
        assert!(indexed);
        assert_eq!(trail.status.records.load(Ordering::Relaxed), 20_000);
        assert_eq!(trail.status.index_queue.load(Ordering::Relaxed), 0);
        trail.close();
    }

    #[test]
    fn numbers_are_valid_distinct_and_times_ordered() {
        let plan = Plan { records: 10_000, years: 10, subjects: 1_000, organisations: 30, end_ms: 1_800_000_000_000 };
        plan.check().unwrap();
        let mut seen = std::collections::HashSet::new();
        for j in 0..plan.subjects {
            let mut b = [0u8; 11];
            let n = Plan::person(j);
            assert!(Niss::parse(n.digits(&mut b)).is_ok());
            assert!(seen.insert(n.as_u64()), "person {j} repeats");
        }
        let subjects: std::collections::HashSet<u64> = (0..plan.records).map(|i| plan.subject_index(i)).collect();
        assert_eq!(subjects.len() as u64, plan.subjects, "every person is used");
        let callers: std::collections::HashSet<u64> = (0..plan.records).map(|i| plan.caller_index(i)).collect();
        assert_eq!(callers.len() as u64, plan.organisations);
        assert!((1..plan.records).all(|i| plan.time_ms(i) >= plan.time_ms(i - 1)));
        assert_eq!(plan.time_ms(0), plan.end_ms - 10 * YEAR_MS);
        let mut k = [0u8; 10];
        assert!(Kbo::parse(Plan::organisation(MAX_ORGANISATIONS - 1).digits(&mut k)).is_ok());
        let bad = Plan { subjects: MAX_SUBJECTS + 1, ..plan };
        assert!(bad.check().unwrap_err().contains("subjects"));
    }
}
