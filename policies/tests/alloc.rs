//! `decide()` makes no heap allocation: for a permit and for every refusal path.

#![allow(clippy::unwrap_used)]

use policies::ids::Kbo;
use policies::model::Env;
use policies::{Decision, DenyCode, Query, Reason, Snapshot};

#[global_allocator]
static ALLOC: testkit::CountingAlloc = testkit::CountingAlloc;

fn snapshot(edit: impl Fn(&str, String) -> String) -> Snapshot {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("bundles");
    let mut files: Vec<_> = std::fs::read_dir(dir).unwrap().map(|e| e.unwrap().path()).collect();
    files.sort();
    let texts: Vec<(String, String)> = files
        .iter()
        .map(|p| {
            let n = p.file_name().unwrap().to_string_lossy().into_owned();
            let t = edit(&n, std::fs::read_to_string(p).unwrap());
            (n, t)
        })
        .collect();
    let policy = policies::bundle::load_texts(texts.iter().map(|(n, t)| (n.as_str(), t.as_str()))).unwrap();
    Snapshot::compile(&policy, 1)
}

/// 2026-11-23T12:00:00Z
const NOW: i64 = 1_795_435_200;

fn q<'a>(who: &str, service: &'a str, basis: &'a str, purpose: &'a str, user: Option<&'a str>, env: Env) -> Query<'a> {
    Query {
        caller: Kbo::parse(who).unwrap(),
        service,
        legal_basis: basis,
        purpose,
        end_user: user,
        environment: env,
        now: NOW,
        certificate: None,
        peer: Some(std::net::IpAddr::from([127, 0, 0, 1])),
    }
}

#[test]
fn decide_allocates_nothing_on_any_path() {
    let s = snapshot(|_, t| t);
    let prd = Env::Production;
    let cases: Vec<(Query<'_>, Option<(DenyCode, Reason)>)> = vec![
        (q("0411330181", "div.vehicle", "DIV/CONV/2023/0042", "INSURANCE_CLAIM", None, prd), None),
        (q("0207000176", "rn.person", "BOSA/LRA/2024", "LRA_REGISTRATION", Some("lra-officer-1"), prd), None),
        (
            q("0403019261", "div.vehicle", "DIV/CONV/2023/0042", "INSURANCE_CLAIM", None, prd),
            Some((DenyCode::NoLegalBasis, Reason::UnknownCaller)),
        ),
        (
            q("0411330181", "div.none", "DIV/CONV/2023/0042", "INSURANCE_CLAIM", None, prd),
            Some((DenyCode::NoLegalBasis, Reason::UnknownService)),
        ),
        (
            q("0411330181", "div.vehicle", "NOPE", "INSURANCE_CLAIM", None, prd),
            Some((DenyCode::NoLegalBasis, Reason::UnknownInstrument)),
        ),
        (
            q("0876543270", "div.vehicle", "DIV/CONV/2023/0042", "INSURANCE_CLAIM", None, prd),
            Some((DenyCode::LegalBasisNotApplicable, Reason::NotCovered)),
        ),
        (
            q("0411330181", "div.vehicle", "DIV/CONV/2023/0042", "OTHER", None, prd),
            Some((DenyCode::PurposeNotAllowed, Reason::PurposeNotGranted)),
        ),
        (
            q("0876543270", "div.vehicle", "DIV/CONV/2024/0007", "FLEET_MANAGEMENT", None, prd),
            Some((DenyCode::InstrumentNotActive, Reason::TestPhaseOnly)),
        ),
        (
            q("0207000176", "rn.person", "BOSA/LRA/2024", "LRA_REGISTRATION", None, prd),
            Some((DenyCode::EndUserRoleMissing, Reason::EndUserMissing)),
        ),
        (
            q("0207000176", "rn.person", "BOSA/LRA/2024", "LRA_REGISTRATION", Some("x"), prd),
            Some((DenyCode::EndUserRoleMissing, Reason::RoleMissing)),
        ),
        (
            q("0207000176", "rn.person", "BOSA/LRA/2024", "LRA_REGISTRATION", Some("lra-officer-2"), prd),
            Some((DenyCode::EndUserRoleMissing, Reason::RoleExpired)),
        ),
        (
            q(
                "0308350231",
                "patrimony.property",
                "SPF-FIN/MATRIX/2017",
                "FRAUD_INVESTIGATION",
                Some("inspector-12"),
                prd,
            ),
            Some((DenyCode::EndUserRoleMissing, Reason::NotTheNamedEndUser)),
        ),
        (q("0207123407", "associations.association", "VL/PROT/2022/017", "SUBSIDY_HANDLING", None, Env::Test), None),
    ];
    for (query, expect) in &cases {
        let (d, allocs) = testkit::allocations(|| s.decide(query));
        assert_eq!(allocs, 0, "{query:?} allocated {allocs} times");
        match (d, expect) {
            (Decision::Permit(_), None) => {}
            (Decision::Deny(d), Some((code, reason))) => assert_eq!((d.code, d.reason), (*code, *reason), "{query:?}"),
            (d, e) => panic!("{query:?}: expected {e:?}, got {d:?}"),
        }
    }

    // The paths that need another policy: suspended, adhesion missing, grant window.
    let s = snapshot(|n, t| match n {
        "sigedis.toml" => {
            let cut = t.rfind("  [[instruments.adhesions]]").unwrap();
            t[..cut].to_owned()
        }
        "div.toml" => t.replacen("state = \"active\"", "state = \"suspended\"", 1).replacen(
            "valid_from = 2023-09-01",
            "valid_from = 2023-09-01\nsuspended_reason = \"audit\"",
            1,
        ),
        "lra.toml" => t.replace("source = \"rn\"\nstatus = \"active\"", "source = \"rn\"\nstatus = \"draft\""),
        _ => t,
    });
    let more = [
        (
            q("0456789034", "sigedis.pensions", "CSI/SSH/19/004/FI", "SUPPLEMENTARY_PENSION_INFO", None, prd),
            (DenyCode::AdhesionMissing, Reason::NotAdhered),
        ),
        (
            q("0411330181", "div.vehicle", "DIV/CONV/2023/0042", "INSURANCE_CLAIM", None, prd),
            (DenyCode::FlowSuspended, Reason::Suspended),
        ),
        (
            q("0308350231", "patrimony.property", "SPF-FIN/MATRIX/2017", "FRAUD_INVESTIGATION", Some("analyst-7"), prd),
            (DenyCode::InstrumentNotActive, Reason::GrantNotYetValid),
        ),
        (
            q("0207000176", "rn.person", "BOSA/LRA/2024", "LRA_REGISTRATION", Some("lra-officer-1"), prd),
            (DenyCode::InstrumentNotActive, Reason::Draft),
        ),
    ];
    for (mut query, (code, reason)) in more {
        if reason == Reason::GrantNotYetValid {
            query.now = NOW - 20 * 86_400;
        }
        let (d, allocs) = testkit::allocations(|| s.decide(&query));
        assert_eq!(allocs, 0, "{query:?} allocated {allocs} times");
        let Decision::Deny(d) = d else { panic!("{query:?} permitted") };
        assert_eq!((d.code, d.reason), (code, reason));
    }
}

/// Parents and statutory ceilings are checked without allocating either: an instrument three
/// levels deep (deliberation → framework → root), a suspended root, a replaced protocol, and
/// the ceilings of the Flemish sources and Sigedis.
#[test]
fn parents_and_ceilings_allocate_nothing() {
    use policies::model::Status;
    let mut p = policies::synthetic::policy(50, 200);
    let ins = &p.instruments[2];
    let policies::model::Recipient::Org(caller) = ins.grants[0].recipient else { unreachable!() };
    let (service, basis) = (ins.grants[0].service.clone(), ins.reference.clone());
    let query = Query {
        caller,
        service: &service,
        legal_basis: &basis,
        purpose: "COMMON",
        end_user: None,
        environment: Env::Production,
        now: NOW,
        certificate: None,
        peer: Some(std::net::IpAddr::from([127, 0, 0, 1])),
    };
    let s = Snapshot::compile(&p, 1);
    let (d, allocs) = testkit::allocations(|| s.decide(&query));
    assert!(d.is_permit(), "{d:?}");
    assert_eq!(allocs, 0);
    // The root two levels up is suspended: every deliberation under it refuses, naming it.
    let root = p.instruments.iter_mut().find(|i| i.reference == policies::synthetic::ROOT).unwrap();
    root.status = Some(Status::Suspended);
    root.suspended_reason = Some("review".into());
    let s = Snapshot::compile(&p, 2);
    let (d, allocs) = testkit::allocations(|| s.decide(&query));
    assert_eq!(allocs, 0);
    let Decision::Deny(d) = d else { panic!("permitted under a suspended root") };
    assert_eq!((d.code, d.reason), (DenyCode::FlowSuspended, Reason::ParentSuspended));
    assert_eq!(s.instrument(d.parent.unwrap()).unwrap().reference.as_ref(), policies::synthetic::ROOT);

    // Ceilings: a company under the statutory basis of the account-number source, and a
    // Flemish instance for another purpose than the decree's.
    let s = snapshot(|_, t| t);
    let cases = [
        (
            q("0765432146", "accounts.iban", "VL/DECR-2008-07-18/ART-5-5", "BENEFIT_PAYMENT", None, Env::Production),
            (DenyCode::LegalBasisNotApplicable, Reason::CeilingRecipient),
        ),
        (
            q("0207123407", "accounts.iban", "VL/DECR-2008-07-18/ART-5-5", "MARKETING", None, Env::Production),
            (DenyCode::PurposeNotAllowed, Reason::PurposeNotGranted),
        ),
    ];
    for (query, (code, reason)) in cases {
        let (d, allocs) = testkit::allocations(|| s.decide(&query));
        assert_eq!(allocs, 0, "{query:?} allocated {allocs} times");
        let Decision::Deny(d) = d else { panic!("{query:?} permitted") };
        assert_eq!((d.code, d.reason), (code, reason), "{query:?}");
    }
    let ok = q("0207123407", "accounts.iban", "VL/DECR-2008-07-18/ART-5-5", "BENEFIT_PAYMENT", None, Env::Production);
    let (d, allocs) = testkit::allocations(|| s.decide(&ok));
    assert_eq!(allocs, 0);
    let Decision::Permit(permit) = d else { panic!("{d:?}") };
    assert!(permit.consent_required, "the ceiling requires consent");
}

#[test]
fn the_counter_does_count() {
    // Guards against a test that passes because nothing is counted.
    let (v, n) = testkit::allocations(|| vec![1u8; 10]);
    assert_eq!(v.len(), 10);
    assert!(n >= 1);
}

/// The access matrix's "where" and "when" are checked without allocating: a grant open from
/// one certificate and one network zone, on weekdays from 08:00 to 18:00 Belgian time; a call
/// that meets both, one from elsewhere, one with another certificate, one on a Saturday.
#[test]
fn where_and_when_allocate_nothing() {
    use policies::model::{Origin, Window, Zone};
    let cert = [0x5au8; 32];
    let hex: String = cert.iter().map(|b| format!("{b:02x}")).collect();
    let mut p = policies::synthetic::policy(50, 200);
    p.zones.push(Zone { name: "fin-internal".into(), networks: vec!["10.12.0.0/16".into(), "fd00:12::/32".into()] });
    let ins = &mut p.instruments[2];
    let g = &mut ins.grants[0];
    g.origin = Some(Origin { certificates: vec![hex], zones: vec!["fin-internal".into()] });
    g.when = vec![Window {
        days: ["mon", "tue", "wed", "thu", "fri"].map(str::to_owned).to_vec(),
        from: "08:00".into(),
        until: "18:00".into(),
    }];
    let policies::model::Recipient::Org(caller) = g.recipient else { unreachable!() };
    let (service, basis) = (g.service.clone(), ins.reference.clone());
    policies::bundle::validate("where-when", &p).unwrap();
    let s = Snapshot::compile(&p, 1);
    let other = [1u8; 32];
    // NOW is Monday 23 November 2026, 13:00 in Brussels; two days earlier is a Saturday.
    let cases = [
        (Some(&cert), [10, 12, 7, 9], NOW, None),
        (Some(&cert), [10, 13, 7, 9], NOW, Some(Reason::OriginNotAllowed)),
        (Some(&other), [10, 12, 7, 9], NOW, Some(Reason::OriginNotAllowed)),
        (None, [10, 12, 7, 9], NOW, Some(Reason::OriginNotAllowed)),
        (Some(&cert), [10, 12, 7, 9], NOW - 2 * 86_400, Some(Reason::OutsideWindow)),
        (Some(&cert), [10, 12, 7, 9], NOW + 6 * 3_600, Some(Reason::OutsideWindow)),
    ];
    for (certificate, ip, now, expect) in cases {
        let query = Query {
            caller,
            service: &service,
            legal_basis: &basis,
            purpose: "COMMON",
            end_user: None,
            environment: Env::Production,
            now,
            certificate,
            peer: Some(std::net::IpAddr::from(ip)),
        };
        let (d, allocs) = testkit::allocations(|| s.decide(&query));
        assert_eq!(allocs, 0, "{query:?} allocated {allocs} times");
        match (d, expect) {
            (Decision::Permit(_), None) => {}
            (Decision::Deny(d), Some(reason)) => {
                assert_eq!((d.code, d.reason), (DenyCode::ConditionNotMet, reason), "{query:?}")
            }
            (d, e) => panic!("{query:?}: expected {e:?}, got {d:?}"),
        }
    }
}
