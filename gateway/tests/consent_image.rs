//! The consent index's image: read back after a clean stop, and never trusted after anything
//! else — a change after it was written (a kill before the next clean stop, a change by the
//! same process after its stop), a damaged file, another store's image.

#![allow(clippy::unwrap_used)]

use std::path::Path;

use gateway::audit::generate::Plan;
use gateway::consent::{ConsentStore, IMAGE_FILE, Recipient, Registry, sample};
use gateway::store::SledStore;
use policies::ids::Kbo;
use policies::model::OrgKind;

const BANK: &str = "0456123494";
const OTHER: &str = "0456789034";
const NOW: u64 = 1_800_000_000_000;

fn open(dir: &Path) -> (SledStore, Registry) {
    let store = SledStore::open(&dir.join("store")).unwrap();
    let r = Registry::open_with_image(ConsentStore::open(&store).unwrap(), Some(dir.join("store").join(IMAGE_FILE)))
        .unwrap();
    (store, r)
}

/// What the index answers for every person and both banks, and for the kind `insurer`.
fn answers(r: &Registry, people: u64) -> Vec<String> {
    let mut v = Vec::new();
    for j in 0..people {
        for (bank, kind) in [(BANK, None), (OTHER, None), (OTHER, Some(OrgKind::Insurer))] {
            let a = r.check(
                Plan::person(j),
                Kbo::parse(bank).unwrap(),
                kind,
                "sigedis.pensions",
                "SUPPLEMENTARY_PENSION_INFO",
                NOW,
                Some(365),
            );
            v.push(format!("{a:?}"));
        }
    }
    v
}

#[test]
fn the_image_is_read_after_a_clean_stop_and_never_after_anything_else() {
    let dir = tempfile::tempdir().unwrap();
    let people = 3_000u64;
    let (db, r) = open(dir.path());
    assert!(!r.from_image(), "nothing to read the first time");
    // Consents of every shape the index holds: two recipients for a person (a slot with more
    // than one entry), a kind, revoked ones, one not validated for over a year.
    let mut batch = Vec::new();
    for j in 0..people {
        let mut d = [0u8; 11];
        let subject = Plan::person(j).digits(&mut d).to_owned();
        let recent = |mut c: gateway::consent::Consent| {
            c.last_validated_ms = NOW - 10 * 86_400_000;
            c
        };
        batch.push(recent(sample(u128::from(j) * 2 + 1, &subject, BANK)));
        if j % 3 == 0 {
            batch.push(recent(sample(u128::from(j) * 2 + 2, &subject, OTHER)));
        }
        if j % 7 == 0 {
            let mut c = sample(u128::from(j) * 2 + 100_000, &subject, OTHER);
            c.recipient = Recipient::Kind(OrgKind::Insurer);
            c.last_validated_ms = NOW - 400 * 86_400_000;
            batch.push(c);
        }
    }
    r.import(&batch, "test").unwrap();
    for c in batch.iter().step_by(11) {
        r.revoke(&c.id, NOW - 1_000, "test").unwrap();
    }
    let before = answers(&r, people);
    assert!(before.iter().any(|a| a.starts_with("Ok")) && before.iter().any(|a| a.contains("Revoked")));
    assert!(before.iter().any(|a| a.contains("RevalidationDue")) && before.iter().any(|a| a.contains("Missing")));
    assert!(r.save_image().unwrap().unwrap() > people as usize);
    drop((r, db));

    // A clean stop's image: read, and answering exactly as before.
    let (db, r) = open(dir.path());
    assert!(r.from_image());
    assert_eq!(answers(&r, people), before);
    drop((r, db));
    // Nothing changed since (a start, then a kill): the image still describes the log.
    let (db, r) = open(dir.path());
    assert!(r.from_image(), "nothing changed: the image still holds");
    assert_eq!(answers(&r, people), before);
    r.save_image().unwrap();
    drop((r, db));

    // A change after the image was read, then a kill (no clean stop): rebuilt, with the change.
    let (db, r) = open(dir.path());
    assert!(r.from_image());
    let revoked = &batch[1];
    r.revoke(&revoked.id, NOW - 1_000, "test").unwrap();
    let changed = answers(&r, people);
    assert_ne!(changed, before);
    drop((r, db));
    let (db, r) = open(dir.path());
    assert!(!r.from_image(), "a change since the image: not trusted");
    assert_eq!(answers(&r, people), changed);
    r.save_image().unwrap();
    drop((r, db));

    // A change after the stop's image was written, by the same process (a connection that
    // outlived the stop): the log is longer than the image says.
    let (db, r) = open(dir.path());
    assert!(r.from_image());
    r.save_image().unwrap();
    r.revoke(&batch[3].id, NOW - 1_000, "test").unwrap();
    let later = answers(&r, people);
    assert_ne!(later, changed);
    drop((r, db));
    let (db, r) = open(dir.path());
    assert!(!r.from_image(), "changed after the image: not trusted");
    assert_eq!(answers(&r, people), later);
    r.save_image().unwrap();
    drop((r, db));
    let changed = later;

    // Another store's image (same consents, another log): not trusted.
    let other = tempfile::tempdir().unwrap();
    {
        // The same changes in the same order: a log of the same length, another identity.
        let (db, r) = open(other.path());
        r.import(&batch, "test").unwrap();
        for c in batch.iter().step_by(11).chain([&batch[1], &batch[3]]) {
            r.revoke(&c.id, NOW - 1_000, "test").unwrap();
        }
        drop((r, db));
    }
    let log_len = |d: &Path| std::fs::metadata(d.join("store").join(gateway::consent::LOG_FILE)).unwrap().len();
    assert_eq!(log_len(other.path()), log_len(dir.path()));
    let theirs = other.path().join("store").join(IMAGE_FILE);
    std::fs::copy(dir.path().join("store").join(IMAGE_FILE), &theirs).unwrap();
    let (db, r) = open(other.path());
    assert!(!r.from_image(), "an image of another log: not trusted");
    drop((r, db));

    // A damaged image: rebuilt.
    let path = dir.path().join("store").join(IMAGE_FILE);
    let mut bytes = std::fs::read(&path).unwrap();
    let mid = bytes.len() / 2;
    bytes[mid] ^= 0x40;
    std::fs::write(&path, &bytes).unwrap();
    let (db, r) = open(dir.path());
    assert!(!r.from_image(), "a damaged image: not trusted");
    assert_eq!(answers(&r, people), changed);
    drop((r, db));
}
