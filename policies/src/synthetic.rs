//! Generated policies of any size, for benchmarks and property tests.

use crate::ids::Kbo;
use crate::model::{
    Ceiling, Env, Grant, Instrument, InstrumentKind, OrgKind, Organisation, Origin, Policy, Recipient, Service, Source,
    Status, Window, Zone,
};

/// A policy with `orgs` organisations, 20 services of 16 fields, and `grants` grants spread over
/// `grants / 10` deliberations (10 grants each), each grant for one organisation and service;
/// every deliberation rests on [`FRAME`], which rests on [`ROOT`], and the source has a
/// statutory ceiling (organisations of kind company, which every recipient is).
pub fn policy(orgs: usize, grants: usize) -> Policy {
    let owner = Kbo::from_first8(19_000_000).unwrap_or_else(|| unreachable!());
    let mut p = Policy::default();
    p.organisations.push(Organisation {
        kbo: owner,
        name: "Owner".into(),
        kind: OrgKind::DataOwner,
        handle: None,
        sectors: vec![],
        authority: None,
        vcode: None,
        certificates: vec![],
        pinned: false,
    });
    // A ceiling every grant stays within, so that every decision checks one.
    let ceiling = Ceiling {
        basis: "synthetic".into(),
        recipients: vec![OrgKind::Company],
        consent: false,
        purposes: vec![],
        fields: vec![],
    };
    p.sources.push(Source {
        id: "src".into(),
        name: "Source".into(),
        owner,
        privacy_office: None,
        ceiling: Some(ceiling),
        audit_retention_days: None,
        ict_office: None,
        revalidation: None,
        upstream: None,
    });
    for s in 0..20 {
        p.services.push(Service {
            id: format!("src.s{s}"),
            source: "src".into(),
            fields: (0..16).map(|f| format!("f{f}")).collect(),
            exposure: None,
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
            authority: None,
            vcode: None,
            certificates: vec![],
            pinned: false,
        });
    }
    let date = |s: &str| s.parse().unwrap_or_else(|_| unreachable!());
    // Deliberations rest on a chain of two frameworks, so that every decision checks an
    // instrument three levels deep (the deliberation, its parent, and the root).
    for (reference, parent) in [(ROOT, None), (FRAME, Some(ROOT))] {
        p.instruments.push(deliberation(reference, parent.map(str::to_owned)));
    }
    for d in 0..grants.div_ceil(10) {
        let mut ins = deliberation(&format!("DELIB/{d:05}"), Some(FRAME.to_owned()));
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
                // Every grant checks a time window and a network zone, so that every permit
                // pays for both conditions.
                origin: Some(Origin { certificates: vec![], zones: vec![ZONE.to_owned()] }),
                when: vec![Window {
                    days: ["mon", "tue", "wed", "thu", "fri", "sat", "sun"].map(str::to_owned).to_vec(),
                    from: "00:00".into(),
                    until: "24:00".into(),
                }],
            });
        }
        p.instruments.push(ins);
    }
    p.zones.push(Zone { name: ZONE.to_owned(), networks: vec!["0.0.0.0/0".into(), "::/0".into()] });
    p
}

/// The network zone every grant of [`policy`] requires: every address.
pub const ZONE: &str = "everywhere";

/// The root framework of [`policy`]'s chain.
pub const ROOT: &str = "FRAME/ROOT";
/// The framework between the root and every deliberation of [`policy`].
pub const FRAME: &str = "FRAME/MID";

fn deliberation(reference: &str, parent: Option<String>) -> Instrument {
    let date = |s: &str| s.parse().unwrap_or_else(|_| unreachable!());
    Instrument {
        reference: reference.to_owned(),
        kind: InstrumentKind::Deliberation,
        title: format!("Deliberation {reference}"),
        authority: Some("CSI-AF".into()),
        number: Some(format!("{reference}/2026")),
        date: Some(date("2026-01-01")),
        parent,
        replaces: vec![],
        dpo_advice: None,
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
        role_validity_days: None,
        text_version: None,
        layout_version: None,
        contact: None,
        signatures: vec![],
        advice: vec![],
        steps: vec![],
    }
}
