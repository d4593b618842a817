//! The consent check, and asking ahead for its memory, allocate nothing: on a hit, a miss, a revoked and an expired consent, and
//! for names it has never seen.

#![allow(clippy::unwrap_used)]

use gateway::consent::{Channel, Consent, ConsentStore, Denial, Recipient, Registry};
use policies::ids::{Kbo, Niss};
use policies::model::OrgKind;

#[global_allocator]
static ALLOC: testkit::CountingAlloc = testkit::CountingAlloc;

fn consent(subject: Niss, recipient: Recipient, until: u64, id: u128) -> Consent {
    let mut d = [0u8; 11];
    Consent {
        id: gateway::consent::ConsentId(id).to_text(),
        subject: subject.digits(&mut d).to_owned(),
        recipient,
        service: "sigedis.pensions".into(),
        purpose: "SUPPLEMENTARY_PENSION_INFO".into(),
        scope: vec![],
        given_at_ms: 1_000,
        valid_until_ms: until,
        revoked_at_ms: None,
        given_via: Channel::CitizenAccessPoint("0316222275".into()),
        evidence: "e".into(),
        last_validated_ms: 1_000,
    }
}

#[test]
fn check_allocates_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let store = gateway::store::SledStore::open(dir.path()).unwrap();
    let registry = Registry::open(ConsentStore::open(&store).unwrap()).unwrap();
    let people = adapters::synthetic::people(1, 4);
    let bank = Kbo::parse("0456123494").unwrap();
    let now = 5_000;
    registry.give(&consent(people[0], Recipient::Org("0456123494".into()), 10_000, 1), "t").unwrap();
    registry.give(&consent(people[1], Recipient::Org("0456123494".into()), 10_000, 2), "t").unwrap();
    registry.revoke(&gateway::consent::ConsentId(2).to_text(), 2_000, "t").unwrap();
    registry.give(&consent(people[2], Recipient::Org("0456123494".into()), 4_000, 3), "t").unwrap();
    registry.give(&consent(people[3], Recipient::Kind(OrgKind::FlemishInstance), 10_000, 4), "t").unwrap();
    let agency = Kbo::parse("0207123407").unwrap();

    let cases = [
        (people[0], bank, None, "sigedis.pensions", "SUPPLEMENTARY_PENSION_INFO", Ok(1)),
        (people[1], bank, None, "sigedis.pensions", "SUPPLEMENTARY_PENSION_INFO", Err(Denial::Revoked)),
        (people[2], bank, None, "sigedis.pensions", "SUPPLEMENTARY_PENSION_INFO", Err(Denial::Expired)),
        (people[0], agency, None, "sigedis.pensions", "SUPPLEMENTARY_PENSION_INFO", Err(Denial::Missing)),
        (people[0], bank, None, "sigedis.pensions", "OTHER", Err(Denial::Missing)),
        (people[0], bank, None, "never.seen", "SUPPLEMENTARY_PENSION_INFO", Err(Denial::Missing)),
        (people[3], agency, Some(OrgKind::FlemishInstance), "sigedis.pensions", "SUPPLEMENTARY_PENSION_INFO", Ok(4)),
    ];
    for (subject, recipient, kind, service, purpose, expect) in cases {
        let ((), allocs) = testkit::allocations(|| registry.prefetch(subject, recipient, kind, service));
        assert_eq!(allocs, 0, "asking ahead for {service} {purpose}: {allocs} allocations");
        let (got, allocs) =
            testkit::allocations(|| registry.check(subject, recipient, kind, service, purpose, now, Some(365)));
        assert_eq!(allocs, 0, "{service} {purpose}: {allocs} allocations");
        assert_eq!(got.map(|id| id.0), expect);
    }
    let (_, n) = testkit::allocations(|| vec![0u8; 3]);
    assert!(n > 0, "the counter counts");
}
