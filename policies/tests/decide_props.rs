//! decide() agrees with a brute-force reading of the model, for random queries against a
//! generated policy: a permit exactly when some grant of the named instrument covers the caller,
//! service and purpose at that time, and then with that grant's field mask.

#![allow(clippy::unwrap_used)]

use policies::ids::Kbo;
use policies::model::{Env, Policy, Recipient};
use policies::{Decision, Query, Snapshot};
use proptest::prelude::*;

fn reference(p: &Policy, q: &Query<'_>) -> Option<usize> {
    let day = q.now.div_euclid(86_400);
    let ins = p.instruments.iter().find(|i| i.reference == q.legal_basis)?;
    ins.grants.iter().find_map(|g| {
        let from = g.valid_from.map_or(i64::MIN, |d| d.days());
        let until = g.valid_until.map_or(i64::MAX, |d| d.days());
        let ok = g.recipient == Recipient::Org(q.caller)
            && g.service == q.service
            && g.purposes.iter().any(|p| p == q.purpose)
            && day >= from
            && day <= until;
        ok.then_some(g.fields.len())
    })
}

fn fixture() -> &'static (Policy, Snapshot) {
    static POLICY: std::sync::OnceLock<(Policy, Snapshot)> = std::sync::OnceLock::new();
    POLICY.get_or_init(|| {
        let p = policies::synthetic::policy(50, 200);
        let s = Snapshot::compile(&p, 1);
        (p, s)
    })
}

/// A query built from grant `n` with one part changed (`mutation` 0 changes nothing).
fn query_for(n: usize, mutation: u8, year: i64, other: usize) -> (Kbo, String, String, String, i64) {
    let (policy, _) = fixture();
    let ins = &policy.instruments[2 + n / 10]; // after the two frameworks
    let g = &ins.grants[n % 10];
    let Recipient::Org(mut caller) = g.recipient else { unreachable!() };
    let mut service = g.service.clone();
    let mut basis = ins.reference.clone();
    let mut purpose = g.purposes[other % g.purposes.len()].clone();
    match mutation {
        1 => caller = policy.organisations[other % policy.organisations.len()].kbo,
        2 => service = format!("src.s{}", other % 22),
        3 => basis = format!("DELIB/{:05}", other % 25),
        4 => purpose = format!("P{}", other % 9),
        _ => {}
    }
    (caller, service, basis, purpose, (year - 1970) * 365 * 86_400 + 200 * 86_400)
}

fn check(n: usize, mutation: u8, year: i64, other: usize) -> Result<bool, String> {
    let (policy, snap) = fixture();
    let (caller, service, basis, purpose, now) = query_for(n, mutation, year, other);
    let q = Query {
        caller,
        service: &service,
        legal_basis: &basis,
        purpose: &purpose,
        end_user: None,
        environment: Env::Production,
        now,
        certificate: None,
        peer: Some(std::net::IpAddr::from([127, 0, 0, 1])),
    };
    match (snap.decide(&q), reference(policy, &q)) {
        (Decision::Permit(p), Some(fields)) if p.fields.count() as usize == fields => Ok(true),
        (Decision::Deny(_), None) => Ok(false),
        (got, want) => Err(format!("{q:?}: decide gave {got:?}, the model says {want:?}")),
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(5_000))]
    #[test]
    fn decide_matches_the_model(n in 0usize..200, mutation in 0u8..5, year in 2015i64..2105, other in 0usize..1000) {
        if let Err(e) = check(n, mutation, year, other) {
            prop_assert!(false, "{}", e);
        }
    }
}

#[test]
fn both_outcomes_are_exercised() {
    // Every grant, unchanged, in its window: permitted; each mutation at least sometimes denies.
    let mut permits = 0;
    let mut denies = 0;
    for n in 0..200 {
        for mutation in 0..5u8 {
            for (year, other) in [(2026, n * 7 + 1), (2101, n + 3), (2019, n * 13 + 5)] {
                match check(n, mutation, year, other) {
                    Ok(true) => permits += 1,
                    Ok(false) => denies += 1,
                    Err(e) => panic!("{e}"),
                }
            }
        }
        assert_eq!(check(n, 0, 2026, 0), Ok(true), "grant {n} must permit its own query");
    }
    assert!(permits > 200 && denies > 1000, "permits {permits}, denies {denies}");
}
