//! Where the embedded store's disk goes per consent: imports N synthetic consents into a fresh
//! store (`/tmp/passerelle-consent-size`) the way the registry imports them (batches of
//! 50,000, each durable), then prints the import rate, the consent log's bytes per consent and
//! the whole directory's. `cargo run --release -p gateway --example consent_size -- 1000000`.

#![allow(clippy::unwrap_used)]

use gateway::consent::{Consent, ConsentStore, Registry};
use gateway::store::SledStore;
fn du(p: &std::path::Path) -> u64 {
    let mut t = 0;
    for e in std::fs::read_dir(p).unwrap().flatten() {
        let m = e.metadata().unwrap();
        t += if m.is_dir() { du(&e.path()) } else { m.len() };
    }
    t
}
fn main() {
    let n: usize = std::env::args().nth(1).unwrap().parse().unwrap();
    let dir = std::env::temp_dir().join("passerelle-consent-size");
    let _ = std::fs::remove_dir_all(&dir);
    let store = SledStore::open(&dir).unwrap();
    let registry = Registry::open(ConsentStore::open(&store).unwrap()).unwrap();
    let people = adapters::synthetic::people(42, n);
    let started = std::time::Instant::now();
    for (i, chunk) in people.chunks(50_000).enumerate() {
        let batch: Vec<Consent> = (chunk.iter().enumerate())
            .map(|(j, p)| {
                let mut d = [0u8; 11];
                gateway::consent::sample((i * 50_000 + j) as u128 + 1, p.digits(&mut d), "0456123494")
            })
            .collect();
        registry.import(&batch, "bench").unwrap();
    }
    let took = started.elapsed().as_secs_f64();
    let log = std::fs::metadata(dir.join(gateway::consent::LOG_FILE)).unwrap().len();
    println!("consent log: {log} bytes, {:.1} B per consent", log as f64 / n as f64);
    store.db().flush().unwrap();
    println!(
        "{n} consents in {took:.1} s ({:.0}/s); on disk {:.0} B per consent",
        n as f64 / took,
        du(&dir) as f64 / n as f64
    );
}
