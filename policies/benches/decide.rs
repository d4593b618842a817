//! `decide()` over a generated policy of 10,000 grants and 1,000 organisations; every
//! deliberation rests on a framework that rests on a root, so each permit checks three levels,
//! and every grant has a "where" (a network zone) and a "when" (a weekly window in Belgian
//! time), so each permit checks both. `permit_unconditioned` is the same policy with the
//! conditions removed, side by side in the same run, to show what they cost.

#![allow(clippy::unwrap_used)]

use criterion::{Criterion, criterion_group, criterion_main};
use policies::model::Env;
use policies::{Query, Snapshot};
use std::hint::black_box;

fn bench(c: &mut Criterion) {
    let policy = policies::synthetic::policy(1_000, 10_000);
    let snap = Snapshot::compile(&policy, 1);
    let mut bare = policy.clone();
    for g in bare.instruments.iter_mut().flat_map(|i| i.grants.iter_mut()) {
        g.origin = None;
        g.when.clear();
    }
    let bare = Snapshot::compile(&bare, 1);
    assert_eq!(snap.grant_count(), 10_000);
    // Queries that exercise the index: permits across the whole policy, and refusals.
    let mut permits = Vec::new();
    let mut denies = Vec::new();
    for n in (0..10_000).step_by(97) {
        // The first two instruments are the frameworks every deliberation rests on.
        let ins = &policy.instruments[2 + n / 10];
        let g = &ins.grants[n % 10];
        let policies::model::Recipient::Org(kbo) = g.recipient else { unreachable!() };
        let mk = |purpose: &'static str| Query {
            caller: kbo,
            service: Box::leak(g.service.clone().into_boxed_str()),
            legal_basis: Box::leak(ins.reference.clone().into_boxed_str()),
            purpose,
            end_user: None,
            environment: Env::Production,
            now: 1_795_435_200,
            certificate: None,
            peer: Some(std::net::IpAddr::from([127, 0, 0, 1])),
        };
        permits.push(mk("COMMON"));
        denies.push(mk("NOT_GRANTED"));
    }
    assert!(permits.iter().all(|q| snap.decide(q).is_permit()));
    assert!(denies.iter().all(|q| !snap.decide(q).is_permit()));
    let mut g = c.benchmark_group("decide");
    let mut i = 0usize;
    g.bench_function("permit", |b| {
        b.iter(|| {
            i = (i + 1) % permits.len();
            black_box(snap.decide(black_box(&permits[i])))
        })
    });
    g.bench_function("permit_unconditioned", |b| {
        b.iter(|| {
            i = (i + 1) % permits.len();
            black_box(bare.decide(black_box(&permits[i])))
        })
    });
    g.bench_function("deny_purpose", |b| {
        b.iter(|| {
            i = (i + 1) % denies.len();
            black_box(snap.decide(black_box(&denies[i])))
        })
    });
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
