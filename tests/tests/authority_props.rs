//! Random sequences of control-plane operations, made by random organisations other than the
//! integrator, never give any organisation a permit it did not have, unless the operation was
//! made by a role that may grant it.
//!
//! Each case starts a real gateway and plays a sequence of operations over mTLS: instruments of
//! every kind (about any source, for any recipient and purpose, draft or in force), lifecycle
//! moves, adhesions, end users' roles, exceptional accesses with advices, remarks and
//! withdrawals, sources, and imports. Before and after each operation the oracle asks
//! `decide()` of the snapshot in force about every (organisation, service, instrument,
//! purpose, end user) it can name. A permit that appears must be justified by the role table:
//! the actor is the data owner of the service's source (it opens its own source), the issuing
//! authority of the instrument, or the organisation that gains it granting its own end users'
//! roles (an adhesion request opens nothing: the data owner makes it active). At the
//! end the gateway's clock moves 8 days: a permit that appears then must be an exceptional
//! access advised by the privacy office of the service's source.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeSet;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use bytes::Bytes;
use http::{Method, StatusCode};
use policies::model::{Env, Policy};
use policies::{Query, Snapshot};
use proptest::prelude::*;
use proptest::test_runner::{Config, TestRunner};
use serde_json::{Value, json};
use tests::{Harness, send};

/// Every registered organisation but the integrator.
const ACTORS: [&str; 18] = [
    "div",
    "sigedis",
    "digitaal-vlaanderen",
    "bosa",
    "spf-finances",
    "bank-a",
    "bank-b",
    "insurer",
    "leasing",
    "company",
    "agency-a",
    "agency-b",
    "citizen-portal",
    "municipality",
    "csi-af",
    "csi-ssh",
    "fin-ssipvp",
    "fin-ict",
];
const SERVICES: [(&str, &str); 7] = [
    ("div.vehicle", "plate"),
    ("sigedis.pensions", "planType"),
    ("associations.association", "name"),
    ("accounts.iban", "defaultIban"),
    ("contacts.contact", "email"),
    ("rn.person", "names"),
    ("patrimony.property", "parcel"),
];
const PURPOSES: [&str; 5] = ["MARKETING", "SUPPLEMENTARY_PENSION_INFO", "LRA_REGISTRATION", "BENEFIT_PAYMENT", "FRAUD"];
const USERS: [&str; 3] = ["u1", "u2", "lra-officer-1"];
const ROLES: [&str; 2] = ["local-registration-officer", "tax-inspector"];
const KINDS: [&str; 5] = ["statutory", "access-matrix", "deliberation", "general", "protocol"];
const STATES: [&str; 8] =
    ["active", "suspended", "revoked", "draft", "test", "deliberation-received", "test-phase", "published"];
const ADHESION_STEPS: [&str; 5] = ["approved", "onboarding", "active", "refused", "withdrawn"];
const MATRICES: [&str; 2] = ["BOSA/LRA/2024", "SPF-FIN/MATRIX/2017"];
const SEEDED: [&str; 9] = [
    "CSI/AF/18/2023",
    "DIV/CONV/2023/0042",
    "DIV/CONV/2024/0007",
    "CSI/SSH/19/004",
    "CSI/SSH/19/004/FI",
    "VL/PROT/2022/017",
    "VL/DECR-2008-07-18/ART-5-5",
    "BOSA/LRA/2024",
    "SPF-FIN/MATRIX/2017",
];

/// Who makes an operation: the data owner of the source concerned, the organisation the
/// operation is about (acting for itself), or any organisation other than the integrator.
#[derive(Debug, Clone, Copy)]
enum By {
    Owner,
    Itself,
    Anyone(usize),
}

fn by() -> impl Strategy<Value = By> {
    prop_oneof![3 => Just(By::Owner), 2 => Just(By::Itself), 1 => (0..ACTORS.len()).prop_map(By::Anyone)]
}

#[derive(Debug, Clone)]
enum Op {
    Instrument {
        kind: usize,
        service: usize,
        recipient: usize,
        purpose: usize,
        consent: bool,
        active: bool,
    },
    Transition {
        instrument: usize,
        to: usize,
    },
    Adhere {
        instrument: usize,
        org: usize,
    },
    /// A step of an adhesion's procedure (seed 001).
    AdhesionStep {
        instrument: usize,
        org: usize,
        to: usize,
    },
    Role {
        org: usize,
        user: usize,
        role: usize,
    },
    /// `service`: none for the matrix's own service.
    Request {
        matrix: usize,
        org: usize,
        user: usize,
        service: Option<usize>,
        purpose: usize,
    },
    Advice {
        request: usize,
        favourable: bool,
    },
    Remark {
        request: usize,
    },
    Withdraw {
        request: usize,
    },
    Source {
        owner: usize,
        ceiling: bool,
    },
    Import,
}

fn op() -> impl Strategy<Value = (Op, By)> {
    let op = prop_oneof![
        3 => (0..KINDS.len(), 0..SERVICES.len(), 0..ACTORS.len(), 0..PURPOSES.len(), any::<bool>(), prop::bool::weighted(0.75))
            .prop_map(|(kind, service, recipient, purpose, consent, active)| Op::Instrument { kind, service, recipient, purpose, consent, active }),
        3 => (0..32usize, 0..STATES.len()).prop_map(|(instrument, to)| Op::Transition { instrument, to }),
        1 => (0..32usize, 0..ACTORS.len()).prop_map(|(instrument, org)| Op::Adhere { instrument, org }),
        2 => (0..32usize, 0..ACTORS.len(), 0..ADHESION_STEPS.len()).prop_map(|(instrument, org, to)| Op::AdhesionStep { instrument, org, to }),
        1 => (0..ACTORS.len(), 0..USERS.len(), 0..ROLES.len()).prop_map(|(org, user, role)| Op::Role { org, user, role }),
        2 => (0..MATRICES.len(), 0..ACTORS.len(), 0..USERS.len(), prop_oneof![3 => Just(None), 1 => (0..SERVICES.len()).prop_map(Some)], 0..PURPOSES.len())
            .prop_map(|(matrix, org, user, service, purpose)| Op::Request { matrix, org, user, service, purpose }),
        2 => (0..8usize, any::<bool>()).prop_map(|(request, favourable)| Op::Advice { request, favourable }),
        1 => (0..8usize).prop_map(|request| Op::Remark { request }),
        1 => (0..8usize).prop_map(|request| Op::Withdraw { request }),
        1 => (0..ACTORS.len(), any::<bool>()).prop_map(|(owner, ceiling)| Op::Source { owner, ceiling }),
        1 => Just(Op::Import),
    ];
    (op, by())
}

/// The data owner of a source, by its certificate's handle.
fn owner_of(source: &str) -> &'static str {
    match source {
        "div" => "div",
        "sigedis" => "sigedis",
        "rn" => "bosa",
        "patrimony" => "spf-finances",
        _ => "digitaal-vlaanderen",
    }
}

fn source_of(service: &str) -> &str {
    service.split('.').next().unwrap_or_default()
}

fn kbo(handle: &str) -> policies::ids::Kbo {
    gateway::demo::org_kbo(handle).unwrap()
}

/// A permit the oracle can name: (organisation, service, instrument, purpose, end user).
type Permit = (String, String, String, String, Option<String>);

/// Every permit `snapshot` gives at `now`, over the names `policy` holds.
fn permits(policy: &Policy, snapshot: &Snapshot, now: i64) -> BTreeSet<Permit> {
    let mut purposes: BTreeSet<&str> = PURPOSES.into_iter().collect();
    let mut users: BTreeSet<&str> = USERS.into_iter().collect();
    for i in &policy.instruments {
        for g in &i.grants {
            purposes.extend(g.purposes.iter().map(String::as_str));
        }
    }
    for x in &policy.exceptional_access {
        purposes.extend(x.purposes.iter().map(String::as_str));
        users.insert(&x.end_user);
    }
    users.extend(policy.roles.iter().map(|r| r.end_user.as_str()));
    let mut out = BTreeSet::new();
    for o in &policy.organisations {
        for s in &policy.services {
            for i in &policy.instruments {
                for p in &purposes {
                    for u in users.iter().map(|u| Some(*u)).chain([None]) {
                        let q = Query {
                            caller: o.kbo,
                            service: &s.id,
                            legal_basis: &i.reference,
                            purpose: p,
                            end_user: u,
                            environment: Env::Production,
                            now,
                            certificate: None,
                            peer: None,
                        };
                        if snapshot.decide(&q).is_permit() {
                            out.insert((
                                o.kbo.to_string(),
                                s.id.clone(),
                                i.reference.clone(),
                                (*p).to_owned(),
                                u.map(str::to_owned),
                            ));
                        }
                    }
                }
            }
        }
    }
    out
}

static APPLIED: AtomicUsize = AtomicUsize::new(0);
static REFUSED: AtomicUsize = AtomicUsize::new(0);
static OPENED: AtomicUsize = AtomicUsize::new(0);

async fn run(ops: Vec<(Op, By)>) -> Result<(), TestCaseError> {
    let h = Harness::start().await.unwrap();
    let policy_handle = &h.demo.gateway.policy;
    let today = (policy_handle.now_ms() / 86_400_000) as i64;
    let date = |d: i64| policies::model::Date::from_days(today + d).unwrap().to_string();
    let mut created: Vec<String> = Vec::new();
    let mut requests: Vec<String> = Vec::new();
    // (request id, actor that advised favourably)
    let mut advised: Vec<(String, String)> = Vec::new();
    let state = |h: &Harness| {
        let p = h.demo.gateway.policy.model();
        let s = h.demo.gateway.policy.current();
        permits(&p, &s, h.demo.gateway.policy.now_secs())
    };
    let mut before = state(&h);
    for (n, (op, by)) in ops.iter().enumerate() {
        if matches!(op, Op::Advice { .. } | Op::Remark { .. } | Op::Withdraw { .. }) && requests.is_empty() {
            continue;
        }
        let model = h.demo.gateway.policy.model();
        // The actor: the owner of `source`, the organisation `itself`, or anyone.
        let pick = |source: &str, itself: usize| -> usize {
            let handle = match by {
                By::Owner => owner_of(source),
                By::Itself => ACTORS[itself],
                By::Anyone(i) => ACTORS[*i],
            };
            ACTORS.iter().position(|a| *a == handle).unwrap()
        };
        let instruments: Vec<&str> = SEEDED.iter().copied().chain(created.iter().map(String::as_str)).collect();
        let instrument_source = |reference: &str| -> String {
            model
                .instruments
                .iter()
                .find(|i| i.reference == reference)
                .and_then(|i| i.sources().first().map(|s| (*s).to_owned()))
                .unwrap_or_default()
        };
        let request_of = |id: &str| -> (String, usize) {
            match model.exceptional_access.iter().find(|x| x.id == id) {
                Some(x) => {
                    let org = ACTORS.iter().position(|a| kbo(a) == x.org).unwrap_or(0);
                    (source_of(&x.service).to_owned(), org)
                }
                None => (String::new(), 0),
            }
        };
        let (actor, method, path, body): (usize, Method, String, Option<Value>) = match op {
            Op::Instrument { kind, service, recipient, purpose, consent, active } => {
                let reference = format!("PROP/{n}");
                let (svc, field) = SERVICES[*service];
                let mut ins = json!({
                    "reference": reference, "kind": KINDS[*kind], "title": "random",
                    "source": source_of(svc),
                    "status": if *active { "active" } else { "draft" },
                    "grants": [{ "id": format!("prop-{n}"), "recipient": { "org": kbo(ACTORS[*recipient]).to_string().replace('.', "") },
                                 "service": svc, "purposes": [PURPOSES[*purpose]], "fields": [field], "consent": consent }],
                });
                match KINDS[*kind] {
                    "statutory" => {
                        ins["law"] = json!("a law");
                        ins["article"] = json!("1");
                    }
                    "deliberation" | "general" => {
                        ins["authority"] = json!("CSI-AF");
                        ins["number"] = json!(format!("{n}/2026"));
                        ins["date"] = json!("2026-01-01");
                        ins["eligible"] = json!(["company", "financial-institution"]);
                        if KINDS[*kind] == "general" {
                            ins["grants"][0]["recipient"] = json!({ "adherents": true });
                        }
                    }
                    "protocol" => {
                        let elements: serde_json::Map<String, Value> = policies::model::ProtocolElements::default()
                            .elements()
                            .iter()
                            .map(|(_, e, _)| ((*e).to_owned(), json!("stated")))
                            .collect();
                        ins["protocol"] = Value::Object(elements);
                        ins["dpo_advice"] = json!("DPO-1");
                    }
                    _ => {}
                }
                (pick(source_of(svc), *recipient), Method::POST, "/instruments".to_owned(), Some(ins))
            }
            Op::Transition { instrument, to } => {
                let reference = instruments[instrument % instruments.len()];
                let path = format!("/instruments/{}/transitions", reference.replace('/', "%2F"));
                let actor = pick(&instrument_source(reference), instrument % ACTORS.len());
                (actor, Method::POST, path, Some(json!({ "to": STATES[*to], "reason": "random" })))
            }
            Op::Adhere { instrument, org } => {
                let reference = instruments[instrument % instruments.len()];
                let path = format!("/instruments/{}/adhesions", reference.replace('/', "%2F"));
                let body = json!({ "org": kbo(ACTORS[*org]).to_string().replace('.', ""), "requested_by": "someone",
                                   "capacity": "director", "official_name": "random", "seat": "somewhere",
                                   "reference": format!("ADH-{n}"), "dpo_advice": "DPO-2", "modalities_confirmed": true,
                                   "evaluation_form": { "title": "form", "reference": "F-1" } });
                (pick(&instrument_source(reference), *org), Method::POST, path, Some(body))
            }
            Op::AdhesionStep { instrument, org, to } => {
                let reference = instruments[instrument % instruments.len()];
                let org_kbo = kbo(ACTORS[*org]).to_string().replace('.', "");
                let path = format!("/instruments/{}/adhesions/{org_kbo}/transitions", reference.replace('/', "%2F"));
                let body = json!({ "to": ADHESION_STEPS[*to], "reason": "random",
                                   "documents": [{ "title": "evidence", "reference": "E-1" }] });
                (pick(&instrument_source(reference), *org), Method::POST, path, Some(body))
            }
            Op::Role { org, user, role } => {
                let body = json!({ "org": kbo(ACTORS[*org]).to_string().replace('.', ""), "end_user": USERS[*user],
                                   "role": ROLES[*role], "valid_from": date(-1), "valid_until": date(360) });
                let source = if *role == 0 { "rn" } else { "patrimony" };
                (pick(source, *org), Method::POST, "/roles".to_owned(), Some(body))
            }
            Op::Request { matrix, org, user, service, purpose } => {
                let id = format!("x-prop-{n}");
                let (svc, field) = SERVICES[service.unwrap_or(5 + matrix)];
                let body = json!({ "id": id, "instrument": MATRICES[*matrix], "org": kbo(ACTORS[*org]).to_string().replace('.', ""),
                                   "end_user": USERS[*user], "service": svc, "purposes": [PURPOSES[*purpose]],
                                   "fields": [field], "justification": "random", "valid_until": date(60) });
                (pick(source_of(svc), *org), Method::POST, "/exceptional-accesses".to_owned(), Some(body))
            }
            Op::Advice { request, favourable } => {
                let id = &requests[request % requests.len()];
                let (source, org) = request_of(id);
                let body = json!({ "reference": "advice", "favourable": favourable });
                (pick(&source, org), Method::POST, format!("/exceptional-accesses/{id}/advice"), Some(body))
            }
            Op::Remark { request } => {
                let id = &requests[request % requests.len()];
                let (source, org) = request_of(id);
                let body = json!({ "remark": "no" });
                (pick(&source, org), Method::POST, format!("/exceptional-accesses/{id}/remark"), Some(body))
            }
            Op::Withdraw { request } => {
                let id = &requests[request % requests.len()];
                let (source, org) = request_of(id);
                let body = json!({ "reason": "no" });
                (pick(&source, org), Method::POST, format!("/exceptional-accesses/{id}/withdraw"), Some(body))
            }
            Op::Source { owner, ceiling } => {
                let mut body = json!({ "id": format!("src{n}"), "name": "random", "owner": kbo(ACTORS[*owner]).to_string().replace('.', "") });
                if *ceiling {
                    body["ceiling"] = json!({ "basis": "none", "recipients": ["company"] });
                }
                (pick("none", *owner), Method::POST, "/sources".to_owned(), Some(body))
            }
            Op::Import => (pick("none", n % ACTORS.len()), Method::POST, "/policy/import".to_owned(), None),
        };
        let who = ACTORS[actor];
        let a = match body {
            Some(b) => h.ctl(who, method, &path, Some(b)).await,
            None => send(&h.control_client(who), method, &path, &[], Bytes::from("")).await.unwrap(),
        };
        if a.status.is_success() {
            APPLIED.fetch_add(1, Ordering::Relaxed);
            match op {
                Op::Instrument { .. } => created.push(format!("PROP/{n}")),
                Op::Request { .. } => requests.push(format!("x-prop-{n}")),
                _ => {}
            }
            if let Op::Advice { favourable: true, .. } = op {
                let id = path.split('/').nth(2).unwrap().to_owned();
                advised.push((id, who.to_owned()));
            }
        } else {
            REFUSED.fetch_add(1, Ordering::Relaxed);
            prop_assert!(a.status != StatusCode::INTERNAL_SERVER_ERROR, "{op:?} by {who}: {}", a.text());
        }
        let after = state(&h);
        let policy = h.demo.gateway.policy.model();
        for (org, service, instrument, purpose, user) in after.difference(&before) {
            OPENED.fetch_add(1, Ordering::Relaxed);
            let source = policy.services.iter().find(|s| s.id == *service).map(|s| s.source.clone()).unwrap();
            let owner = policy.sources.iter().find(|s| s.id == source).map(|s| s.owner.to_string()).unwrap();
            let actor_kbo = kbo(who).to_string();
            let owns = owner == actor_kbo;
            // The issuing authority of the instrument (its deliberations and their adhesions).
            let code =
                policy.organisations.iter().find(|o| o.kbo.to_string() == actor_kbo).and_then(|o| o.authority.clone());
            let issued = code.is_some()
                && policy.instruments.iter().any(|i| {
                    i.reference == *instrument
                        && matches!(
                            i.kind,
                            policies::model::InstrumentKind::Deliberation | policies::model::InstrumentKind::General
                        )
                        && i.authority == code
                });
            // Acting for itself an organisation only asks (an adhesion request opens nothing
            // until the data owner makes it active) or narrows, except its own end users' roles.
            let for_itself = *org == actor_kbo && matches!(op, Op::Role { .. });
            prop_assert!(
                owns || for_itself || issued,
                "{op:?} by {who} opened {service} to {org} under {instrument} for {purpose} ({user:?}) without a role that may grant it"
            );
        }
        before = after;
    }
    // Eight days on: only exceptional accesses advised by the privacy office open anything.
    h.demo.gateway.policy.advance_clock(Duration::from_secs(8 * 86_400));
    let after = state(&h);
    let policy = h.demo.gateway.policy.model();
    for (org, service, instrument, purpose, user) in after.difference(&before) {
        OPENED.fetch_add(1, Ordering::Relaxed);
        let source = policy.services.iter().find(|s| s.id == *service).map(|s| s.source.clone()).unwrap();
        let office = policy.sources.iter().find(|s| s.id == source).map(|s| s.privacy_office().to_string()).unwrap();
        let justified = policy.exceptional_access.iter().any(|x| {
            x.org.to_string() == *org
                && x.service == *service
                && x.instrument == *instrument
                && Some(&x.end_user) == user.as_ref()
                && advised.iter().any(|(id, by)| *id == x.id && kbo(by).to_string() == office)
        });
        prop_assert!(justified, "8 days on, {service} opened to {org} under {instrument} for {purpose} ({user:?})");
    }
    h.demo.gateway.shutdown().await;
    Ok(())
}

/// The sequences the test plays unless `PASSERELLE_PROP_SEED` names others.
const SEED: u64 = 0x0A07_4017;

#[test]
fn no_participant_widens_its_own_rights() {
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    let cases = std::env::var("PASSERELLE_PROP_CASES").ok().and_then(|v| v.parse().ok()).unwrap_or(16);
    // A fixed seed by default, so that the check below (some sequence opened access lawfully)
    // holds on every run: with a random one, 16 sequences now and then open nothing, and the
    // test failed for want of evidence rather than for a widened right. PASSERELLE_PROP_SEED
    // explores other sequences.
    let seed = std::env::var("PASSERELLE_PROP_SEED").ok().and_then(|v| v.parse().ok()).unwrap_or(SEED);
    let mut runner = TestRunner::new(Config {
        cases,
        failure_persistence: None,
        rng_seed: proptest::test_runner::RngSeed::Fixed(seed),
        ..Config::default()
    });
    let result = runner.run(&proptest::collection::vec(op(), 6..16), |ops| rt.block_on(run(ops)));
    if let Err(e) = result {
        panic!("{e}");
    }
    // Not vacuous: operations were applied and refused, and some opened access lawfully.
    let (applied, refused, opened) =
        (APPLIED.load(Ordering::Relaxed), REFUSED.load(Ordering::Relaxed), OPENED.load(Ordering::Relaxed));
    assert!(applied > 0 && refused > 0 && opened > 0, "applied {applied}, refused {refused}, opened {opened}");
    eprintln!(
        "{cases} sequences (seed {seed}): {applied} operations applied, {refused} refused, {opened} permits opened lawfully"
    );
}
