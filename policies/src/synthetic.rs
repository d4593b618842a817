//! Generated policies of any size, for benchmarks and property tests.

use crate::ids::Kbo;
use crate::model::{
    Env, Grant, Instrument, InstrumentKind, OrgKind, Organisation, Policy, Recipient, Service, Source, Status,
};

/// A policy with `orgs` organisations, 20 services of 16 fields, and `grants` grants spread over
/// `grants / 10` deliberations (10 grants each), each grant for one organisation and service.
pub fn policy(orgs: usize, grants: usize) -> Policy {
    let owner = Kbo::from_first8(19_000_000).unwrap_or_else(|| unreachable!());
    let mut p = Policy::default();
    p.organisations.push(Organisation {
        kbo: owner,
        name: "Owner".into(),
        kind: OrgKind::DataOwner,
        handle: None,
        sectors: vec![],
    });
    p.sources.push(Source { id: "src".into(), name: "Source".into(), owner });
    for s in 0..20 {
        p.services.push(Service {
            id: format!("src.s{s}"),
            source: "src".into(),
            fields: (0..16).map(|f| format!("f{f}")).collect(),
        });
    }
    let kbos: Vec<Kbo> = (0..orgs).filter_map(|i| Kbo::from_first8(1_000_000 + i as u32 * 7)).collect();
    for (i, k) in kbos.iter().enumerate() {
        p.organisations.push(Organisation {
            kbo: *k,
            name: format!("Org {i}"),
            kind: OrgKind::Company,
            handle: None,
            sectors: vec![],
        });
    }
    let date = |s: &str| s.parse().unwrap_or_else(|_| unreachable!());
    for d in 0..grants.div_ceil(10) {
        let mut ins = Instrument {
            reference: format!("DELIB/{d:05}"),
            kind: InstrumentKind::Deliberation,
            title: format!("Deliberation {d}"),
            authority: Some("CSI-AF".into()),
            number: Some(format!("{d}/2026")),
            date: Some(date("2026-01-01")),
            parent: None,
            law: None,
            article: None,
            eligible: vec![],
            protocol: None,
            state: None,
            suspended_from: None,
            source: None,
            status: Some(Status::Active),
            suspended_reason: None,
            valid_from: None,
            valid_until: None,
            grants: vec![],
            adhesions: vec![],
        };
        for g in 0..10 {
            let n = d * 10 + g;
            if n >= grants {
                break;
            }
            ins.grants.push(Grant {
                id: format!("g{n}"),
                recipient: Recipient::Org(kbos[n % kbos.len()]),
                service: format!("src.s{}", n % 20),
                purposes: vec![format!("P{}", n % 7), "COMMON".into()],
                fields: (0..(1 + n % 16)).map(|f| format!("f{f}")).collect(),
                consent: n % 3 == 0,
                environments: vec![Env::Test, Env::Production],
                valid_from: Some(date("2020-01-01")),
                valid_until: Some(date("2099-12-31")),
                rate: None,
                end_user_role: None,
            });
        }
        p.instruments.push(ins);
    }
    p
}
