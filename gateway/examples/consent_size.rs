//! Where the embedded store's disk goes per consent: imports N synthetic consents into a fresh
//! sled store (`/tmp/passerelle-consent-size`) the way the registry imports them, then prints
//! the logical bytes per consent of each tree (keys and values) and the directory's size per
//! consent. `cargo run --release -p gateway --example consent_size -- 200000`.

#![allow(clippy::unwrap_used)]

use gateway::consent::{Channel, Consent, ConsentId, ConsentStore, Recipient, Registry};
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
    let registry = Registry::open(ConsentStore::open(store.db()).unwrap()).unwrap();
    let people = adapters::synthetic::people(42, n);
    let started = std::time::Instant::now();
    for (i, chunk) in people.chunks(50_000).enumerate() {
        let batch: Vec<Consent> = chunk
            .iter()
            .enumerate()
            .map(|(j, p)| {
                let mut d = [0u8; 11];
                Consent {
                    id: ConsentId((i * 50_000 + j) as u128 + 1).to_text(),
                    subject: p.digits(&mut d).to_owned(),
                    recipient: Recipient::Org("0456123494".into()),
                    service: "sigedis.pensions".into(),
                    purpose: "SUPPLEMENTARY_PENSION_INFO".into(),
                    scope: vec![],
                    given_at_ms: 1_700_000_000_000,
                    valid_until_ms: 1_900_000_000_000,
                    revoked_at_ms: None,
                    given_via: Channel::CitizenAccessPoint("0316222275".into()),
                    evidence: "bench".into(),
                    last_validated_ms: 1_700_000_000_000,
                }
            })
            .collect();
        registry.import(&batch, "bench").unwrap();
    }
    let took = started.elapsed().as_secs_f64();
    let db = store.db();
    for name in ["consents", "consent_ids", "consent_events"] {
        let t = db.open_tree(name).unwrap();
        let (mut k, mut v) = (0u64, 0u64);
        for kv in t.iter() {
            let (a, b) = kv.unwrap();
            k += a.len() as u64;
            v += b.len() as u64;
        }
        println!(
            "{name}: {} entries, keys {:.0} B, values {:.0} B per consent",
            t.len(),
            k as f64 / n as f64,
            v as f64 / n as f64
        );
    }
    db.flush().unwrap();
    println!(
        "{n} consents in {took:.1} s ({:.0}/s); on disk {:.0} B per consent",
        n as f64 / took,
        du(&dir) as f64 / n as f64
    );
}
