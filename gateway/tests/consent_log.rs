//! The embedded store's consent log: what it keeps (every field, every event), what it takes
//! on disk, and what it does with a crash's torn write, with damage, and with the sled trees
//! an earlier version kept consents in.

#![allow(clippy::unwrap_used)]

use std::path::Path;

use gateway::consent::{Channel, Consent, ConsentId, ConsentStore, LOG_FILE, Recipient, Registry, sample};
use gateway::store::SledStore;
use policies::model::OrgKind;

const BANK: &str = "0456123494";

fn open(dir: &Path) -> (SledStore, Registry) {
    let store = SledStore::open(dir).unwrap();
    let registry = Registry::open(ConsentStore::open(&store).unwrap()).unwrap();
    (store, registry)
}

fn person(j: u64) -> String {
    let mut d = [0u8; 11];
    gateway::audit::generate::Plan::person(j).digits(&mut d).to_owned()
}

/// Consents of every shape a record can hold.
fn shapes() -> Vec<Consent> {
    let mut a = sample(1, &person(1), BANK);
    a.scope = vec!["vlaanderen.onderwijs".into(), "vlaanderen.wonen".into()];
    a.evidence = "form 2026/00017 — signé à la commune".into();
    let mut b = sample(u128::MAX - 7, &person(2), BANK);
    b.recipient = Recipient::Kind(OrgKind::FlemishInstance);
    b.given_via = Channel::Instance("0207123407".into());
    b.service = "vlaanderen.contact".into();
    b.purpose = "CONTACT".into();
    let mut c = sample(3, &person(1), "0456789034");
    c.valid_until_ms = u64::MAX / 4;
    vec![a, b, c]
}

#[test]
fn every_field_and_every_event_come_back_after_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let consents = shapes();
    let (store, r) = open(dir.path());
    r.give(&consents[0], "0316222275").unwrap();
    r.import(&consents[1..], "0207000176").unwrap();
    let revoked = r.revoke(&consents[2].id, 1_800_000_000_123, "0316222275").unwrap();
    let revalidated = r.revalidate(&consents[0].id, 1_800_000_000_456, "0316222275").unwrap();
    r.invite(&consents[1].id, 1_800_000_000_789, "0456123494").unwrap();
    assert!(matches!(
        r.revoke(&consents[2].id, 1_800_000_001_000, "x"),
        Err(gateway::consent::ChangeError::AlreadyRevoked)
    ));
    let expect = [revalidated, consents[1].clone(), revoked];
    drop((r, store));

    let (_store, r) = open(dir.path());
    for c in &expect {
        assert_eq!(r.store().get(&c.id).unwrap().as_ref(), Some(c), "{}", c.id);
    }
    let events = |id: &str| -> Vec<(String, u64, String)> {
        r.store()
            .history(id)
            .unwrap()
            .iter()
            .map(|e| {
                assert_eq!(e["consent"], id);
                (e["event"].as_str().unwrap().into(), e["at_ms"].as_u64().unwrap(), e["actor"].as_str().unwrap().into())
            })
            .collect()
    };
    let given = consents[0].given_at_ms;
    assert_eq!(
        events(&consents[0].id),
        [("given".into(), given, "0316222275".into()), ("revalidated".into(), 1_800_000_000_456, "0316222275".into())]
    );
    assert_eq!(
        events(&consents[1].id),
        [("imported".into(), given, "0207000176".into()), ("invited".into(), 1_800_000_000_789, "0456123494".into())]
    );
    assert_eq!(events(&consents[2].id)[1], ("revoked".into(), 1_800_000_000_123, "0316222275".into()));
    let mine: Vec<String> = r.of_subject(&person(1)).unwrap().into_iter().map(|c| c.id).collect();
    assert_eq!(mine.len(), 2);
    assert!(mine.contains(&consents[0].id) && mine.contains(&consents[2].id));
    assert!(r.store().get(&ConsentId(99).to_text()).unwrap().is_none());
    assert!(r.store().history(&ConsentId(99).to_text()).unwrap().is_empty());
}

/// An import writes only consents the log lacks: importing again writes nothing, and never
/// over a consent revoked since.
#[test]
fn an_import_never_writes_over_a_consent_again() {
    let dir = tempfile::tempdir().unwrap();
    let (_store, r) = open(dir.path());
    let batch: Vec<Consent> = (0..100u64).map(|j| sample(u128::from(j) + 1, &person(j), BANK)).collect();
    assert_eq!(r.import(&batch, "0207000176").unwrap(), 100);
    r.revoke(&batch[5].id, 1_800_000_000_000, "0316222275").unwrap();
    let mut more = batch.clone();
    more.push(sample(1_000, &person(1_000), BANK));
    more.push(sample(1_000, &person(1_000), BANK));
    assert_eq!(r.import(&more, "0207000176").unwrap(), 1, "only the new one, once");
    assert!(r.store().get(&batch[5].id).unwrap().unwrap().revoked_at_ms.is_some());
    let now = 1_800_000_000_001;
    let bank = policies::ids::Kbo::parse(BANK).unwrap();
    let niss = gateway::audit::generate::Plan::person(5);
    let check = r.check(niss, bank, None, "sigedis.pensions", "SUPPLEMENTARY_PENSION_INFO", now, None);
    assert_eq!(check, Err(gateway::consent::Denial::Revoked));
    let events: Vec<String> =
        r.store().history(&batch[5].id).unwrap().iter().map(|e| e["event"].as_str().unwrap().to_owned()).collect();
    assert_eq!(events, ["imported", "revoked"]);
}

#[test]
fn a_consent_with_its_history_takes_well_under_300_bytes() {
    let dir = tempfile::tempdir().unwrap();
    let (_store, r) = open(dir.path());
    let n = 20_000u64;
    let batch: Vec<Consent> = (0..n).map(|j| sample(u128::from(j) + 1, &person(j), BANK)).collect();
    r.import(&batch, "0207000176").unwrap();
    // A tenth revoked and a tenth re-validated: history beside the consents.
    for c in batch.iter().step_by(10) {
        r.revoke(&c.id, 1_800_000_000_000, "0316222275").unwrap();
    }
    for c in batch.iter().skip(1).step_by(10) {
        r.revalidate(&c.id, 1_800_000_000_000, "0316222275").unwrap();
    }
    let bytes = std::fs::metadata(dir.path().join(LOG_FILE)).unwrap().len();
    let per = bytes as f64 / n as f64;
    println!("{n} consents, a fifth changed once: {bytes} bytes, {per:.1} a consent");
    assert!(per < 120.0, "{per:.1} bytes a consent");
}

#[test]
fn a_torn_last_write_is_cut_and_damage_before_the_end_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let consents = shapes();
    let path = dir.path().join(LOG_FILE);
    let len_after_first;
    {
        let (_store, r) = open(dir.path());
        r.give(&consents[0], "t").unwrap();
        len_after_first = std::fs::metadata(&path).unwrap().len();
        r.import(&consents[1..], "t").unwrap();
    }
    let whole = std::fs::read(&path).unwrap();
    // A crash while the second frame was being written: any prefix of it is cut off, and
    // the first consent is there.
    for keep in [len_after_first + 1, len_after_first + 12, whole.len() as u64 - 1] {
        std::fs::write(&path, &whole[..keep as usize]).unwrap();
        let (_s, r) = open(dir.path());
        assert_eq!(std::fs::metadata(&path).unwrap().len(), len_after_first, "cut back to the last whole frame");
        assert!(r.store().get(&consents[0].id).unwrap().is_some());
        assert!(r.store().get(&consents[1].id).unwrap().is_none(), "a frame is all there or not at all");
        // Writing goes on after the cut.
        r.import(&consents[1..], "t").unwrap();
        drop((r, _s));
        let (_s, r) = open(dir.path());
        assert_eq!(r.store().get(&consents[2].id).unwrap().as_ref(), Some(&consents[2]));
        assert_eq!(std::fs::read(&path).unwrap(), whole, "the same bytes as without the crash");
    }
    // A byte flipped in the first frame, the second intact: not a torn write.
    let mut damaged = whole.clone();
    damaged[40] ^= 0x10;
    std::fs::write(&path, &damaged).unwrap();
    let store = SledStore::open(dir.path()).unwrap();
    let err = ConsentStore::open(&store).unwrap_err().to_string();
    assert!(err.contains("damaged at byte 24") && err.contains("frames after it"), "{err}");
    assert_eq!(std::fs::read(&path).unwrap(), damaged, "nothing cut");
    drop(store);
    // Both frames damaged (a checksum that no longer matches anything, as after a change of
    // format): the first is whole and more follows, so it is not a torn write either.
    damaged[whole.len() - 2] ^= 0x10;
    std::fs::write(&path, &damaged).unwrap();
    let store = SledStore::open(dir.path()).unwrap();
    let err = ConsentStore::open(&store).unwrap_err().to_string();
    assert!(err.contains("damaged at byte 24"), "{err}");
    assert_eq!(std::fs::read(&path).unwrap(), damaged, "nothing cut");
}

/// Evidence is text a caller chooses: bytes shaped like a whole frame inside it do not make a
/// crash during its write look like damage.
#[test]
fn a_frame_forged_inside_evidence_is_not_taken_for_one() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join(LOG_FILE);
    {
        let (_s, r) = open(dir.path());
        r.give(&sample(1, &person(1), BANK), "t").unwrap();
    }
    let before = std::fs::metadata(&path).unwrap().len();
    // Frames as an attacker would forge them: CRC-32 of the payload alone, and of each offset
    // the evidence could land at and the payload (the log's identity the attacker lacks).
    let mut c = sample(2, &person(2), BANK);
    // Evidence is UTF-8: a forged frame is one whose checksum bytes happen to be ASCII, found
    // by varying the name its payload defines.
    let forge = |sum: &dyn Fn(&[u8]) -> u32| -> String {
        (0u32..)
            .find_map(|k| {
                let payload = [&[1u8, 4][..], &k.to_le_bytes().map(|b| b'a' + b % 26)[..]].concat();
                let mut f = b"PCF1".to_vec();
                f.extend_from_slice(&(payload.len() as u32).to_le_bytes());
                f.extend_from_slice(&sum(&payload).to_le_bytes());
                f.extend_from_slice(&payload);
                f.is_ascii().then(|| String::from_utf8(f).unwrap())
            })
            .unwrap()
    };
    let mut forged = forge(&|p: &[u8]| crc32fast::hash(p));
    for at in before..before + 300 {
        forged.push_str(&forge(&|p: &[u8]| {
            let mut h = crc32fast::Hasher::new();
            h.update(&at.to_le_bytes());
            h.update(p);
            h.finalize()
        }));
    }
    assert!(forged.len() > 1000, "the forged frames are text");
    c.evidence = forged;
    {
        let (_s, r) = open(dir.path());
        r.give(&c, "t").unwrap();
    }
    // The crash: the frame holding it is cut short.
    let whole = std::fs::read(&path).unwrap();
    std::fs::write(&path, &whole[..whole.len() - 3]).unwrap();
    let (_s, r) = open(dir.path());
    assert_eq!(std::fs::metadata(&path).unwrap().len(), before, "cut as a torn write");
    assert!(r.store().get(&c.id).unwrap().is_none());
}

#[test]
fn consents_kept_in_sled_by_an_earlier_version_move_to_the_log_once() {
    let dir = tempfile::tempdir().unwrap();
    let consents = shapes();
    {
        // The trees and values an earlier version wrote.
        let db = sled::open(dir.path()).unwrap();
        let (trees, ids, events) = (
            db.open_tree("consents").unwrap(),
            db.open_tree("consent_ids").unwrap(),
            db.open_tree("consent_events").unwrap(),
        );
        for (i, c) in consents.iter().enumerate() {
            let mut key = c.subject.as_bytes().to_vec();
            key.push(0);
            key.extend_from_slice(c.id.as_bytes());
            trees.insert(key, serde_json::to_vec(c).unwrap()).unwrap();
            ids.insert(c.id.as_bytes(), c.subject.as_bytes()).unwrap();
            for (at, event) in [(c.given_at_ms, "given"), (c.given_at_ms + 1000 + i as u64, "invited")] {
                let mut k = at.to_be_bytes().to_vec();
                k.extend_from_slice(c.id.as_bytes());
                let e = serde_json::json!({ "event": event, "consent": c.id, "at_ms": at, "actor": "0316222275" });
                events.insert(k, e.to_string().as_bytes()).unwrap();
            }
        }
        db.flush().unwrap();
    }
    for _ in 0..2 {
        let (store, r) = open(dir.path());
        for c in &consents {
            assert_eq!(r.store().get(&c.id).unwrap().as_ref(), Some(c));
            let h = r.store().history(&c.id).unwrap();
            assert_eq!(h.iter().map(|e| e["event"].as_str().unwrap()).collect::<Vec<_>>(), ["given", "invited"]);
        }
        assert_eq!(r.len(), 3, "indexed");
        let names = store.db().tree_names();
        assert!(!names.iter().any(|t| t.as_ref() == b"consents"), "the sled trees are dropped");
    }
    let bytes = std::fs::metadata(dir.path().join(LOG_FILE)).unwrap().len();
    assert!(bytes < 1_000, "migrated once: {bytes} bytes");

    // An earlier version run again on the migrated store writes a consent into sled: the
    // next start names it and refuses, rather than drop it.
    {
        let db = sled::open(dir.path()).unwrap();
        let late = sample(77, &person(77), BANK);
        let mut key = late.subject.as_bytes().to_vec();
        key.push(0);
        key.extend_from_slice(late.id.as_bytes());
        db.open_tree("consents").unwrap().insert(key, serde_json::to_vec(&late).unwrap()).unwrap();
        db.flush().unwrap();
    }
    let store = SledStore::open(dir.path()).unwrap();
    let err = ConsentStore::open(&store).unwrap_err().to_string();
    assert!(err.contains(&ConsentId(77).to_text()) && err.contains("which the log lacks"), "{err}");
    assert!(store.db().tree_names().iter().any(|t| t.as_ref() == b"consents"), "nothing dropped");
}

/// Several consents of one person for one recipient (other services, a revoked one and a
/// later one for the same service) are each answered for, also after a rebuild.
#[test]
fn several_consents_of_one_person_for_one_recipient_are_told_apart() {
    let dir = tempfile::tempdir().unwrap();
    let bank = policies::ids::Kbo::parse(BANK).unwrap();
    let niss = gateway::audit::generate::Plan::person(3);
    let subject = person(3);
    let mut pensions = sample(1, &subject, BANK);
    pensions.valid_until_ms = 1_850_000_000_000;
    let mut contact = sample(2, &subject, BANK);
    contact.service = "vlaanderen.contact".into();
    contact.purpose = "CONTACT".into();
    let mut later = sample(3, &subject, BANK);
    later.valid_until_ms = 1_950_000_000_000;
    let ask =
        |r: &Registry, service: &str, purpose: &str, now: u64| r.check(niss, bank, None, service, purpose, now, None);
    for reopen in [false, true] {
        let (_store, r) = open(dir.path());
        if !reopen {
            r.import(&[pensions.clone(), contact.clone()], "t").unwrap();
        }
        let now = 1_800_000_000_000;
        if !reopen {
            assert_eq!(ask(&r, "sigedis.pensions", "SUPPLEMENTARY_PENSION_INFO", now), Ok(ConsentId(1)));
            r.revoke(&pensions.id, now, "t").unwrap();
        }
        if !reopen {
            assert_eq!(
                ask(&r, "sigedis.pensions", "SUPPLEMENTARY_PENSION_INFO", now + 1),
                Err(gateway::consent::Denial::Revoked)
            );
        }
        assert_eq!(ask(&r, "vlaanderen.contact", "CONTACT", now + 1), Ok(ConsentId(2)));
        if !reopen {
            r.give(&later, "t").unwrap();
        }
        assert_eq!(
            ask(&r, "sigedis.pensions", "SUPPLEMENTARY_PENSION_INFO", now + 1),
            Ok(ConsentId(3)),
            "the later one"
        );
        assert_eq!(
            ask(&r, "sigedis.pensions", "SUPPLEMENTARY_PENSION_INFO", 1_960_000_000_000),
            Err(gateway::consent::Denial::Revoked)
        );
        assert_eq!(ask(&r, "vlaanderen.contact", "OTHER", now), Err(gateway::consent::Denial::Missing));
        assert_eq!(r.len(), 3);
        assert_eq!(r.of_subject(&subject).unwrap().len(), 3);
    }
}

/// The consents due for re-validation come from the index: not revoked, validated a period
/// ago or more, the most overdue first, at most `limit`, with how many are due in all.
#[test]
fn the_consents_due_are_the_most_overdue_of_the_index() {
    const DAY: u64 = 86_400_000;
    let dir = tempfile::tempdir().unwrap();
    let (_store, r) = open(dir.path());
    let now = 20_000 * DAY;
    // Consent j was last validated 300 + 3j days ago (j = 0..40).
    let batch: Vec<Consent> = (0..40u64)
        .map(|j| {
            let mut c = sample(u128::from(j) + 1, &person(j), BANK);
            c.last_validated_ms = now - (300 + 3 * j) * DAY;
            c
        })
        .collect();
    r.import(&batch, "t").unwrap();
    r.revoke(&batch[39].id, now, "t").unwrap();
    let mut other = sample(100, &person(100), BANK);
    other.service = "vlaanderen.contact".into();
    other.last_validated_ms = now - 900 * DAY;
    r.give(&other, "t").unwrap();
    // Due after 365 days: 300 + 3j >= 365 from j = 22 to 38 (39 revoked); the other service is
    // not asked for.
    let (first, total) = r.due(&[("sigedis.pensions", 365)], now, 5).unwrap();
    assert_eq!(total, 17);
    let ids: Vec<String> = first.iter().map(|c| c.id.clone()).collect();
    let expect: Vec<String> = [38u64, 37, 36, 35, 34].iter().map(|j| batch[*j as usize].id.clone()).collect();
    assert_eq!(ids, expect, "the most overdue first");
    let (all, _) = r.due(&[("sigedis.pensions", 365), ("vlaanderen.contact", 365)], now, 100).unwrap();
    assert_eq!(all.len(), 18);
    assert_eq!(all[0].id, other.id);
}
