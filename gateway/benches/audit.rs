//! Audit append + group commit: durable records per second with many concurrent callers, the
//! way the data plane uses the trail (one record per call, each caller waiting for durability).

#![allow(clippy::unwrap_used)]

use std::sync::Arc;
use std::time::{Duration, Instant};

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use gateway::audit::{self, Outcome, Record, RecordKind, SubjectRef};
use gateway::store::SledStore;

fn record(i: u64) -> Record {
    Record {
        kind: RecordKind::DataCall,
        time_ms: 1_795_435_200_000 + i,
        request_id: format!("bench-{i}"),
        trace_id: None,
        caller: Some("0207123407".into()),
        cert_fingerprint: Some("915380cff7b44b3397e82dca909ea8b07157b829a0b652159e2904cc0e0ab70f".into()),
        end_user: Some("case-handler-17".into()),
        environment: Some("production".into()),
        service: Some("associations.association".into()),
        operation: "GET /associations/association".into(),
        legal_basis: Some("VL/PROT/2022/017".into()),
        grant: Some("assoc-agency-a-subsidy".into()),
        purpose: Some("SUBSIDY_HANDLING".into()),
        subjects: vec![SubjectRef::Association(format!("V{:07}", 1001 + i % 4000))],
        fields: ["vCode", "name", "status", "contact", "purpose", "representatives"].map(String::from).to_vec(),
        consent_id: None,
        outcome: Outcome::Granted,
        status: 200,
        code: None,
        upstream_status: Some(200),
        latency_us: 850,
        justification: None,
    }
}

fn bench(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let store = Arc::new(SledStore::open(&dir.path().join("store")).unwrap());
    let cfg = gateway::config::AuditConfig {
        dir: dir.path().join("audit"),
        signing_key: dir.path().join("audit.key"),
        ..Default::default()
    };
    let (trail, _) = audit::open(&cfg, store).unwrap();
    let trail = Arc::new(trail);
    let mut g = c.benchmark_group("audit");
    g.measurement_time(Duration::from_secs(10));
    g.sample_size(20);
    for callers in [1usize, 64, 512] {
        let per_iter = if callers == 1 { 50 } else { 20_000 };
        g.throughput(Throughput::Elements(per_iter as u64));
        g.bench_function(format!("append_durable/{callers}_callers"), |b| {
            b.iter_custom(|iters| {
                let trail = trail.clone();
                rt.block_on(async move {
                    let start = Instant::now();
                    for _ in 0..iters {
                        let per_caller = per_iter / callers;
                        let tasks: Vec<_> = (0..callers)
                            .map(|c| {
                                let trail = trail.clone();
                                tokio::spawn(async move {
                                    for i in 0..per_caller {
                                        trail.append(&record((c * per_caller + i) as u64)).await.unwrap();
                                    }
                                })
                            })
                            .collect();
                        for t in tasks {
                            t.await.unwrap();
                        }
                    }
                    start.elapsed()
                })
            })
        });
    }
    g.finish();
    let batches = trail.status.batches.load(std::sync::atomic::Ordering::Relaxed);
    let records = trail.status.records.load(std::sync::atomic::Ordering::Relaxed);
    println!(
        "audit bench: {records} records in {batches} fdatasync batches ({:.1} per batch)",
        records as f64 / batches.max(1) as f64
    );
}

criterion_group!(benches, bench);
criterion_main!(benches);
