//! How soon a gateway with N consents can decide: the consent index read from the image a
//! clean stop leaves, against the index rebuilt from the store. Each step is its own process
//! (a fresh page cache is not promised, a fresh heap is):
//!
//! ```text
//! cargo run --release -p gateway --example consent_ready -- prepare 1000000   # import, once
//! cargo run --release -p gateway --example consent_ready -- image 1000000     # open from the image
//! cargo run --release -p gateway --example consent_ready -- rebuild 1000000   # open from the store
//! cargo run --release -p gateway --example consent_ready -- each 1000000      # every consent read; those due
//! ```
//!
//! `prepare` imports N synthetic consents into `/tmp/passerelle-consent-ready-N` (kept), opens
//! the registry as the gateway does and writes the image as a clean stop does. `image` opens it
//! as the gateway does at start and writes the image again on the way out (a clean stop), so
//! it can be run repeatedly; `rebuild` opens the registry without its image.

#![allow(clippy::unwrap_used)]

use std::time::Instant;

use gateway::consent::{Consent, ConsentStore, IMAGE_FILE, Registry};
use gateway::store::SledStore;

#[global_allocator]
static ALLOC: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let (mode, n) = (args[1].as_str(), args[2].parse::<usize>().unwrap());
    let dir = std::env::temp_dir().join(format!("passerelle-consent-ready-{n}"));
    let image = dir.join(IMAGE_FILE);
    if mode == "prepare" {
        let _ = std::fs::remove_dir_all(&dir);
        let store = SledStore::open(&dir).unwrap();
        let registry = Registry::open(ConsentStore::open(&store).unwrap()).unwrap();
        let people = adapters::synthetic::people(42, n);
        let started = Instant::now();
        for (i, chunk) in people.chunks(50_000).enumerate() {
            let batch: Vec<Consent> = (chunk.iter().enumerate())
                .map(|(j, p)| {
                    let mut d = [0u8; 11];
                    let bank = ["0456123494", "0456789034"][j % 2];
                    // Ids as `passerelle consent import` derives them: spread, not counted.
                    let id = gateway::consent::import_id("bench", (i * 50_000 + j) as u64, "");
                    gateway::consent::sample(id.0, p.digits(&mut d), bank)
                })
                .collect();
            registry.import(&batch, "bench").unwrap();
        }
        println!("{n} consents imported in {:.1} s", started.elapsed().as_secs_f64());
        drop(registry);
    }
    let before = testkit::rss_kib() / 1024;
    let started = Instant::now();
    let store = SledStore::open(&dir).unwrap();
    let consents = ConsentStore::open(&store).unwrap();
    let opened = started.elapsed().as_secs_f64();
    let registry = match mode {
        "rebuild" => Registry::open(consents).unwrap(),
        _ => Registry::open_with_image(consents, Some(image.clone())).unwrap(),
    };
    let took = started.elapsed().as_secs_f64();
    println!(
        "{mode}: index of {} consents ready in {took:.2} s ({}; the store opened in {opened:.2} s); RSS {before} MiB before, {} MiB after, {} MiB at most",
        registry.len(),
        if registry.from_image() { "read from its image" } else { "built from the store" },
        testkit::rss_kib() / 1024,
        testkit::peak_rss_kib() / 1024
    );
    if mode == "each" {
        // What `GET /consents/due` reads: every consent as it stands, from the store.
        let started = Instant::now();
        let mut due = 0usize;
        let n = registry.store().each(|c| due += usize::from(c.last_validated_ms < 1_750_000_000_000)).unwrap();
        println!("each: {n} consents read from the store in {:.2} s", started.elapsed().as_secs_f64());
        // What it does now: the index's cells, then the 100 most overdue read from the store.
        let started = Instant::now();
        let (first, total) = registry.due(&[("sigedis.pensions", 365)], 1_800_000_000_000, 100).unwrap();
        println!(
            "due: {total} due found in the index, {} read, in {:.2} s",
            first.len(),
            started.elapsed().as_secs_f64()
        );
        return;
    }
    if mode != "rebuild" {
        let started = Instant::now();
        registry.save_image().unwrap();
        let bytes = std::fs::metadata(&image).map(|m| m.len()).unwrap_or(0);
        println!(
            "image written in {:.2} s: {bytes} bytes ({:.0} a consent); RSS {} MiB at most",
            started.elapsed().as_secs_f64(),
            bytes as f64 / n as f64,
            testkit::peak_rss_kib() / 1024
        );
    }
}
