//! The consent check with N consents loaded (1,000,000; `CONSENT_BENCH_N=10000000` for a
//! country), and the resident memory they take. Hits and misses are spread over all N subjects
//! (each subject once, in a scattered order), so the check is measured against memory, not
//! against a cache-resident handful of slots.

#![allow(clippy::unwrap_used)]

use std::hint::black_box;
use std::time::Instant;

use criterion::{Criterion, criterion_group, criterion_main};
use gateway::consent::{Consent, ConsentStore, Registry};
use gateway::store::SledStore;
use policies::ids::Kbo;

fn n() -> usize {
    std::env::var("CONSENT_BENCH_N").ok().and_then(|v| v.parse().ok()).unwrap_or(1_000_000)
}

/// The gateway's allocator (see `main.rs`), so the table sits in memory as it does in the
/// gateway.
#[global_allocator]
static ALLOC: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Every element of `v`, in a scattered order (a stride coprime with its length).
fn scattered<T: Copy>(v: &[T]) -> Vec<T> {
    let n = v.len();
    let mut stride = (n as f64 * 0.618_033_988_7) as usize | 1;
    while gcd(stride, n) != 1 {
        stride += 2;
    }
    (0..n).map(|i| v[(i * stride) % n]).collect()
}

fn gcd(a: usize, b: usize) -> usize {
    if b == 0 { a } else { gcd(b, a % b) }
}

#[allow(non_snake_case)]
fn bench(c: &mut Criterion) {
    let N = n();
    // The store is kept between runs (in the temp dir) so that a second run opens it in a
    // fresh process and the RSS it reports is the registry's alone.
    let dir = std::env::temp_dir().join(format!("passerelle-consent-bench-{N}"));
    let populated = dir.join("populated");
    let people = adapters::synthetic::people(42, N + N / 10);
    let banks = ["0456123494", "0456789034"];
    if !populated.exists() {
        let _ = std::fs::remove_dir_all(&dir);
        let store = SledStore::open(&dir).unwrap();
        let registry = Registry::open(ConsentStore::open(&store).unwrap()).unwrap();
        let started = Instant::now();
        for chunk in people[..N].chunks(50_000).enumerate() {
            let (i, chunk) = chunk;
            let batch: Vec<Consent> = (chunk.iter().enumerate())
                .map(|(j, p)| {
                    let mut d = [0u8; 11];
                    gateway::consent::sample((i * 50_000 + j) as u128 + 1, p.digits(&mut d), banks[j % 2])
                })
                .collect();
            registry.import(&batch, "bench").unwrap();
        }
        println!("consent bench: {N} consents imported in {:.1} s", started.elapsed().as_secs_f64());
        std::fs::write(&populated, b"").unwrap();
        println!("consent bench: run again for an RSS figure measured in a fresh process");
    }
    // A fresh open, as at gateway start: the index is rebuilt from the store.
    let before = testkit::rss_kib();
    let started = Instant::now();
    // Opened as the gateway opens it (store.cache_mb at its default).
    let store = SledStore::open(&dir).unwrap();
    let registry = Registry::open(ConsentStore::open(&store).unwrap()).unwrap();
    let after = testkit::rss_kib();
    println!(
        "consent bench: index of {} consents rebuilt in {:.1} s; RSS {} MiB before, {} MiB after ({} MiB for the index, the consent log's locator and the store; {} MiB in huge pages)",
        registry.len(),
        started.elapsed().as_secs_f64(),
        before / 1024,
        after / 1024,
        after.saturating_sub(before) / 1024,
        testkit::huge_pages_kib() / 1024
    );
    let bank_a = Kbo::parse(banks[0]).unwrap();
    // Bank A holds the consents of every other person.
    let hits: Vec<_> = scattered(&people[..N].iter().step_by(2).copied().collect::<Vec<_>>());
    let misses: Vec<_> = scattered(&people[N..]);
    let check =
        |p| registry.check(p, bank_a, None, "sigedis.pensions", "SUPPLEMENTARY_PENSION_INFO", 1_800_000_000_000, None);
    assert!(hits.iter().all(|p| check(*p).is_ok()));
    assert!(misses.iter().all(|p| check(*p).is_err()));
    // As the data plane checks, the check's memory asked for earlier (the pipeline asks at the
    // envelope step, before authorising): the bench asks `ahead` checks ahead (4;
    // `CONSENT_BENCH_AHEAD`), and the asking is part of the time measured. With 0, nothing is
    // asked for: a check that waits for memory.
    let ahead: usize = std::env::var("CONSENT_BENCH_AHEAD").ok().and_then(|v| v.parse().ok()).unwrap_or(4);
    let mut g = c.benchmark_group("consent_check_1m");
    for (name, people, asked) in [
        ("hit", &hits, 0),
        ("miss", &misses, 0),
        ("hit_asked_ahead", &hits, ahead),
        ("miss_asked_ahead", &misses, ahead),
    ] {
        let mut i = 0;
        g.bench_function(name, |b| {
            b.iter(|| {
                i = (i + 1) % people.len();
                if asked > 0 {
                    registry.prefetch(people[(i + asked) % people.len()], bank_a, None, "sigedis.pensions");
                }
                black_box(check(black_box(people[i])))
            })
        });
    }
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
