//! The control plane for data owners, over real mTLS against a running gateway with real
//! sandboxes: the DIV convention procedure of seed 000 played through the API under concurrent
//! data-plane load, the Sigedis path of seed 001, protocols refused for each missing art. 8
//! element, roles and exceptional accesses, publication, persistence across a restart, and the
//! OpenAPI document checked against the served API (every answer below is validated against it
//! by `Harness::ctl`).

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::{BTreeSet, HashSet};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use adapters::xml;
use bytes::Bytes;
use gateway::audit::RecordKind;
use gateway::audit::verify::{read_records, verify_dir};
use gateway::demo::{DIV_CALLER, DIV_LEGAL_BASIS, DIV_PURPOSE};
use http::{Method, StatusCode};
use serde_json::{Value, json};
use tests::{ASSOC_CALLER, Answer, FLEET, FLEET_INT, FLEET_KBO, Harness, association, person, send, sigedis, vcode};

const DELIBERATION: &str = "CSI/AF/31/2026";
const CONVENTION: &str = "DIV/CONV/2026/0100";
const FLEET_PURPOSE: &str = "FLEET_MANAGEMENT";

fn plate() -> String {
    gateway::demo::div_vehicle().unwrap().0
}

async fn fleet_call(h: &Harness, who: &str) -> Answer {
    let headers = [("x-legal-basis", CONVENTION), ("x-purpose", FLEET_PURPOSE)];
    let body = Bytes::from(adapters::div::request_by_plate(&plate()));
    send(&h.client(who), Method::POST, "/div/vehicle", &headers, body).await.unwrap()
}

async fn transition(h: &Harness, who: &str, reference: &str, to: &str, reason: Option<&str>) -> Answer {
    step(h, who, reference, json!({ "to": to, "reason": reason })).await
}

/// One step of an instrument's procedure with its evidence.
async fn step(h: &Harness, who: &str, reference: &str, body: Value) -> Answer {
    let path = format!("/instruments/{}/transitions", tests::enc(reference));
    h.ctl(who, Method::POST, &path, Some(body)).await
}

fn vehicle_elements(a: &Answer) -> HashSet<String> {
    let payload = xml::open_envelope(&a.body, xml::LIMITS).unwrap();
    payload.find("Vehicle").unwrap().children.iter().map(|c| c.name.clone()).collect()
}

async fn published(h: &Harness) -> (Value, String) {
    let public = h.public_client();
    let j = send(&public, Method::GET, "/public/instruments", &[], Bytes::new()).await.unwrap();
    assert_eq!(j.status, StatusCode::OK);
    let html = send(&public, Method::GET, "/public/instruments.html", &[], Bytes::new()).await.unwrap();
    assert_eq!(html.status, StatusCode::OK);
    assert!(html.headers["content-type"].to_str().unwrap().starts_with("text/html"));
    (j.json().unwrap(), html.text())
}

fn references(doc: &Value) -> Vec<String> {
    doc["instruments"].as_array().unwrap().iter().map(|i| i["reference"].as_str().unwrap().to_owned()).collect()
}

/// Keeps data-plane calls on flows that no change touches running, each on its own
/// keep-alive connection, and counts answers that are not 200.
struct Load {
    stop: Arc<AtomicBool>,
    ok: Arc<AtomicUsize>,
    failures: Arc<std::sync::Mutex<Vec<String>>>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

/// A test that fails half-way still stops its load, so that the runtime can shut down.
impl Drop for Load {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

impl Load {
    fn start(h: &Harness) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let ok = Arc::new(AtomicUsize::new(0));
        let failures = Arc::new(std::sync::Mutex::new(Vec::new()));
        let mut tasks = Vec::new();
        let div_body = adapters::div::request_by_plate(&plate());
        let v = vcode();
        for i in 0..4 {
            let (client, method, path, headers, body) = if i % 2 == 0 {
                let headers =
                    vec![("x-legal-basis", DIV_LEGAL_BASIS.to_owned()), ("x-purpose", DIV_PURPOSE.to_owned())];
                (h.client(DIV_CALLER), Method::POST, "/div/vehicle", headers, Bytes::from(div_body.clone()))
            } else {
                let headers = vec![
                    ("x-legal-basis", gateway::demo::ASSOC_LEGAL_BASIS.to_owned()),
                    ("x-purpose", gateway::demo::ASSOC_PURPOSE.to_owned()),
                    ("x-subject", v.clone()),
                ];
                (h.client(ASSOC_CALLER), Method::GET, "/associations/association", headers, Bytes::new())
            };
            let (stop, ok, failures) = (stop.clone(), ok.clone(), failures.clone());
            tasks.push(tokio::spawn(async move {
                let mut conn = client.connect().await.unwrap();
                while !stop.load(Ordering::Relaxed) {
                    let hs: Vec<(&str, &str)> = headers.iter().map(|(k, v)| (*k, v.as_str())).collect();
                    let req = gateway::client::request(method.clone(), path, &hs, body.clone()).unwrap();
                    match conn.send(req).await {
                        Ok(a) if a.status == StatusCode::OK => {
                            ok.fetch_add(1, Ordering::Relaxed);
                        }
                        Ok(a) => failures.lock().unwrap().push(format!("{path}: {} {}", a.status, a.text())),
                        Err(e) => failures.lock().unwrap().push(format!("{path}: {e:#}")),
                    }
                }
            }));
        }
        Load { stop, ok, failures, tasks }
    }

    /// Stops the load once it has made `at_least` calls (however slow the machine).
    async fn finish(mut self, at_least: usize) -> (usize, Vec<String>) {
        let deadline = std::time::Instant::now() + Duration::from_secs(60);
        while self.ok.load(Ordering::Relaxed) < at_least && self.failures.lock().unwrap().is_empty() {
            assert!(std::time::Instant::now() < deadline, "the load made no progress");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        self.stop.store(true, Ordering::Relaxed);
        for t in std::mem::take(&mut self.tasks) {
            t.await.unwrap();
        }
        (self.ok.load(Ordering::Relaxed), self.failures.lock().unwrap().clone())
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_div_procedure_through_the_api_under_load() {
    // The test side of DIV is a second, real DIV sandbox that counts its calls.
    let test_hits = Arc::new(AtomicUsize::new(0));
    let hits = test_hits.clone();
    let register = Arc::new(adapters::div::sandbox::Register::generate());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let test_side = adapters::sandbox::serve(listener, move |req| {
        hits.fetch_add(1, Ordering::SeqCst);
        let register = register.clone();
        async move { register.answer(&req) }
    })
    .unwrap();
    let url = test_side.url();
    let h = Harness::with_overrides(&[("PASSERELLE__SOURCES__DIV__TEST_UPSTREAM", url.as_str())]).await.unwrap();
    let load = Load::start(&h);
    tokio::time::sleep(Duration::from_millis(200)).await;
    let version0 = h.demo.gateway.policy.version();

    // The integrator registers the new beneficiary.
    let a = h
        .ctl(
            "admin",
            Method::POST,
            "/organisations",
            Some(json!({ "kbo": FLEET_KBO, "name": "Fleet lessor (synthetic)", "kind": "leasing-company" })),
        )
        .await;
    assert_eq!(a.status, StatusCode::CREATED, "{}", a.text());
    let a = h
        .ctl(
            "div",
            Method::POST,
            "/organisations",
            Some(json!({ "kbo": "0412345614", "name": "x", "kind": "company" })),
        )
        .await;
    assert_eq!(a.code(), Some("ADMIN_ROLE_MISSING"), "only the integrator registers organisations");

    // DIV registers the deliberation it received, then the beneficiary's convention.
    let deliberation = json!({
        "reference": DELIBERATION, "kind": "deliberation",
        "title": "Délibération AF n° 31/2026 – DIV data for leasing companies' fleet management",
        "authority": "CSI-AF", "number": "31/2026", "date": "2026-10-01", "source": "div", "status": "active",
    });
    let convention = json!({
        "reference": CONVENTION, "kind": "convention", "parent": DELIBERATION,
        "title": "DIV data communication convention – fleet lessor",
        "grants": [{
            "id": "div-fleet-lessor", "recipient": { "org": FLEET_KBO }, "service": "div.vehicle",
            "purposes": [FLEET_PURPOSE], "fields": ["plate", "make", "model", "fuel"],
        }],
    });
    // Another data owner may not register instruments about DIV.
    let a = h.ctl("sigedis", Method::POST, "/instruments", Some(convention.clone())).await;
    assert_eq!(a.code(), Some("ADMIN_ROLE_MISSING"), "{}", a.text());
    let detail = a.json().unwrap()["detail"].as_str().unwrap().to_owned();
    assert!(detail.contains("the data owner of div (0511.223.355)"), "{detail}");
    // A convention cannot be registered before the deliberation it rests on.
    let a = h.ctl("div", Method::POST, "/instruments", Some(convention.clone())).await;
    assert_eq!(a.code(), Some("POLICY_INVALID"), "{}", a.text());
    assert!(a.json().unwrap()["detail"].as_str().unwrap().contains("parent: unknown instrument"), "{}", a.text());
    let a = h.ctl("div", Method::POST, "/instruments", Some(deliberation)).await;
    assert_eq!(a.status, StatusCode::CREATED, "{}", a.text());
    let a = h.ctl("div", Method::POST, "/instruments", Some(convention.clone())).await;
    assert_eq!(a.status, StatusCode::CREATED, "{}", a.text());
    assert_eq!(a.json().unwrap()["item"]["state"], "requested");
    let a = h.ctl("div", Method::POST, "/instruments", Some(convention)).await;
    assert_eq!(a.code(), Some("ALREADY_EXISTS"));

    // Requested: nothing answers, in either environment.
    let a = fleet_call(&h, FLEET_INT).await;
    assert_eq!(a.code(), Some("INSTRUMENT_NOT_ACTIVE"), "{}", a.text());
    // Steps cannot be skipped, and only DIV moves its convention.
    let a = transition(&h, "div", CONVENTION, "active", None).await;
    assert_eq!(a.code(), Some("TRANSITION_NOT_ALLOWED"));
    assert!(a.text().contains("from requested the possible states are: deliberation-received, terminated"));
    let a = transition(&h, "sigedis", CONVENTION, "deliberation-received", None).await;
    assert_eq!(a.code(), Some("ADMIN_ROLE_MISSING"));
    let a = transition(&h, FLEET, CONVENTION, "deliberation-received", None).await;
    assert_eq!(a.code(), Some("ADMIN_ROLE_MISSING"), "the beneficiary's certificate is not the data owner's");

    // Seed 000 §2: DIV received the copy of the deliberation.
    let received = "copy of Délibération AF n° 31/2026 received from the CSI";
    let a = step(
        &h,
        "div",
        CONVENTION,
        json!({ "to": "deliberation-received", "reason": received,
        "documents": [{ "title": "Délibération AF n° 31/2026", "reference": DELIBERATION }] }),
    )
    .await;
    assert_eq!(a.status, StatusCode::OK, "{}", a.text());
    // §3: DIV sends its standard convention with the imposed layout, naming their versions.
    let a = transition(&h, "div", CONVENTION, "convention-sent", None).await;
    assert_eq!(a.code(), Some("REQUEST_INVALID"), "the versions are required: {}", a.text());
    let sent = json!({ "to": "convention-sent", "text_version": "DIV standard convention 2026.1",
        "layout_version": "div.vehicle.xsd 2023-09",
        "documents": [{ "title": "Convention, two copies", "sha256": "5e".repeat(32) }] });
    let a = step(&h, FLEET, CONVENTION, sent.clone()).await;
    assert_eq!(a.code(), Some("ADMIN_ROLE_MISSING"), "{}", a.text());
    let a = step(&h, "div", CONVENTION, sent).await;
    assert_eq!(a.status, StatusCode::OK, "{}", a.text());
    // §4: the beneficiary signs both copies and returns the contact form; DIV cannot sign for it.
    let signed = json!({ "to": "signed-by-beneficiary",
        "signatory": { "name": "An Peeters", "capacity": "Managing director" },
        "contact": { "name": "Fleet desk", "email": "fleet-desk@example.invalid", "phone": "+3220000000" } });
    let a = step(&h, "div", CONVENTION, signed.clone()).await;
    assert_eq!(a.code(), Some("ADMIN_ROLE_MISSING"), "{}", a.text());
    assert!(a.text().contains("organisation 0412.345.614 itself"), "{}", a.text());
    let mut no_contact = signed.clone();
    no_contact["contact"] = Value::Null;
    let a = step(&h, FLEET, CONVENTION, no_contact).await;
    assert_eq!(a.code(), Some("REQUEST_INVALID"), "{}", a.text());
    let a = step(&h, FLEET, CONVENTION, signed).await;
    assert_eq!(a.status, StatusCode::OK, "{}", a.text());
    let a = fleet_call(&h, FLEET_INT).await;
    assert_eq!(a.code(), Some("INSTRUMENT_NOT_ACTIVE"), "signed, not yet tested");
    assert_eq!(test_hits.load(Ordering::SeqCst), 0);

    // Test phase: calls from the test environment reach the sandbox; production is refused.
    let a = transition(&h, FLEET, CONVENTION, "test-phase", None).await;
    assert_eq!(a.code(), Some("ADMIN_ROLE_MISSING"), "DIV's IT department starts the tests");
    let a = transition(&h, "div", CONVENTION, "test-phase", None).await;
    assert_eq!(a.status, StatusCode::OK, "{}", a.text());
    let a = fleet_call(&h, FLEET_INT).await;
    assert_eq!(a.status, StatusCode::OK, "{}", a.text());
    assert_eq!(test_hits.load(Ordering::SeqCst), 1, "the test side answered");
    assert_eq!(vehicle_elements(&a), ["Plate", "Make", "Model", "Fuel"].map(String::from).into());
    let a = fleet_call(&h, FLEET).await;
    assert_eq!(a.code(), Some("INSTRUMENT_NOT_ACTIVE"), "{}", a.text());
    assert_eq!(test_hits.load(Ordering::SeqCst), 1);

    // Active: DIV countersigns (the convention signed by both parties activates it); the
    // integrator cannot sign for DIV. Production answers, exactly the granted fields.
    let a = transition(&h, "div", CONVENTION, "active", None).await;
    assert_eq!(a.code(), Some("TRANSITION_NOT_ALLOWED"), "the countersignature is required: {}", a.text());
    let countersigned = json!({ "to": "active", "signatory": { "name": "Head of DIV", "capacity": "Director" } });
    let a = step(&h, "admin", CONVENTION, countersigned.clone()).await;
    assert_eq!(a.code(), Some("ADMIN_ROLE_MISSING"), "{}", a.text());
    let a = step(&h, "div", CONVENTION, countersigned).await;
    assert_eq!(a.status, StatusCode::OK, "{}", a.text());
    let a = fleet_call(&h, FLEET).await;
    assert_eq!(a.status, StatusCode::OK, "{}", a.text());
    assert_eq!(vehicle_elements(&a), ["Plate", "Make", "Model", "Fuel"].map(String::from).into());
    assert_eq!(test_hits.load(Ordering::SeqCst), 1, "production did not go to the test side");
    let (doc, _) = published(&h).await;
    assert!(references(&doc).contains(&DELIBERATION.to_owned()), "an active deliberation is published");
    assert!(!references(&doc).contains(&CONVENTION.to_owned()), "active is not yet published");

    // Published: on the public page, as JSON and HTML; DIV publishes, not the beneficiary.
    let a = transition(&h, FLEET, CONVENTION, "published", None).await;
    assert_eq!(a.code(), Some("ADMIN_ROLE_MISSING"), "{}", a.text());
    let a = transition(&h, "div", CONVENTION, "published", None).await;
    assert_eq!(a.status, StatusCode::OK);
    let (doc, html) = published(&h).await;
    let entry = doc["instruments"].as_array().unwrap().iter().find(|i| i["reference"] == CONVENTION).unwrap();
    assert_eq!(entry["parent"], DELIBERATION);
    assert_eq!(entry["grants"][0]["recipient"]["name"], "Fleet lessor (synthetic)");
    assert!(html.contains(CONVENTION) && html.contains("Délibération AF n° 31/2026"), "{html}");
    // Public: what the seed publishes; not the signatories, the contact form or the steps.
    let keys: BTreeSet<&str> = entry.as_object().unwrap().keys().map(String::as_str).collect();
    let public: BTreeSet<&str> = [
        "reference",
        "kind",
        "title",
        "authority",
        "number",
        "date",
        "parent",
        "sources",
        "valid_from",
        "valid_until",
        "grants",
    ]
    .into();
    assert_eq!(keys, public);
    for private in ["An Peeters", "fleet-desk@", "Head of DIV", "DIV standard convention"] {
        assert!(!html.contains(private) && !doc.to_string().contains(private), "{private} is not public");
    }

    // Suspended by DIV with a reason: every call gets FLOW_SUSPENDED with it; off the page.
    let a = transition(&h, FLEET, CONVENTION, "suspended", Some("ours")).await;
    assert_eq!(a.code(), Some("ADMIN_ROLE_MISSING"), "the beneficiary does not suspend: {}", a.text());
    let a = transition(&h, "div", CONVENTION, "suspended", None).await;
    assert_eq!(a.code(), Some("REQUEST_INVALID"), "a suspension needs a reason");
    let reason = "security audit of the beneficiary pending";
    let a = transition(&h, "div", CONVENTION, "suspended", Some(reason)).await;
    assert_eq!(a.status, StatusCode::OK, "{}", a.text());
    for who in [FLEET, FLEET_INT] {
        let a = fleet_call(&h, who).await;
        assert_eq!(a.code(), Some("FLOW_SUSPENDED"), "{who}: {}", a.text());
        assert!(a.text().contains(reason), "{}", a.text());
    }
    assert!(!references(&published(&h).await.0).contains(&CONVENTION.to_owned()));

    // Resumed: back where it was (published), answering again; by DIV, not the beneficiary.
    let a = transition(&h, FLEET, CONVENTION, "active", None).await;
    assert_eq!(a.code(), Some("ADMIN_ROLE_MISSING"), "{}", a.text());
    let a = transition(&h, "div", CONVENTION, "active", None).await;
    assert_eq!(a.status, StatusCode::OK);
    assert_eq!(a.json().unwrap()["change"]["summary"], "suspended → published");
    assert_eq!(fleet_call(&h, FLEET).await.status, StatusCode::OK);
    assert!(references(&published(&h).await.0).contains(&CONVENTION.to_owned()));
    let a = h.ctl(FLEET, Method::GET, &format!("/instruments/{}", tests::enc(CONVENTION)), None).await;
    let ins = a.json().unwrap();
    assert_eq!((ins["state"].clone(), ins["effective_status"].clone()), (json!("published"), json!("active")));
    // The evidence of every step, as the data owner can show it to an auditor.
    let steps: Vec<(&str, &str, &str)> = ins["steps"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| (s["to"].as_str().unwrap(), s["by"].as_str().unwrap(), s["role"].as_str().unwrap()))
        .collect();
    let (div, fleet) = ("0511223355", FLEET_KBO);
    assert_eq!(
        steps,
        [
            ("deliberation-received", div, "data owner"),
            ("convention-sent", div, "data owner"),
            ("signed-by-beneficiary", fleet, "the organisation itself"),
            ("test-phase", div, "data owner"),
            ("active", div, "data owner"),
            ("published", div, "data owner"),
            ("suspended", div, "data owner"),
            ("published", div, "data owner"),
        ]
    );
    assert!(ins["steps"].as_array().unwrap().iter().all(|s| s["at"].as_str().is_some_and(|t| t.starts_with("20"))));
    assert_eq!(ins["steps"][0]["reason"], received);
    assert_eq!(ins["steps"][0]["documents"][0]["reference"], DELIBERATION);
    assert_eq!(ins["steps"][6]["reason"], reason);
    assert_eq!(
        (ins["text_version"].clone(), ins["layout_version"].clone(), ins["contact"]["email"].clone()),
        (
            json!("DIV standard convention 2026.1"),
            json!("div.vehicle.xsd 2023-09"),
            json!("fleet-desk@example.invalid")
        )
    );
    let signatures: Vec<(&str, &str, &str)> = ins["signatures"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| (s["party"].as_str().unwrap(), s["org"].as_str().unwrap(), s["name"].as_str().unwrap()))
        .collect();
    assert_eq!(signatures, [("beneficiary", fleet, "An Peeters"), ("data-owner", div, "Head of DIV")]);

    // The load on the flows no change touched never failed.
    let (ok, failures) = load.finish(40).await;
    assert!(failures.is_empty(), "{} failed calls, e.g. {:?}", failures.len(), &failures[..failures.len().min(3)]);
    assert!(ok >= 40, "the load ran ({ok} calls)");
    eprintln!("load during the procedure: {ok} calls, all answered 200");

    // Every change is versioned, attributed, and in the audit trail.
    let a = h.ctl("div", Method::GET, &format!("/changes?after={version0}"), None).await;
    let changes = a.json().unwrap()["changes"].as_array().unwrap().clone();
    let summaries: Vec<&str> = changes.iter().map(|c| c["summary"].as_str().unwrap()).collect();
    assert_eq!(
        summaries,
        [
            "registered as leasing-company",
            "registered (active)",
            "registered (requested)",
            "requested → deliberation-received",
            "deliberation-received → convention-sent",
            "convention-sent → signed-by-beneficiary",
            "signed-by-beneficiary → test-phase",
            "test-phase → active",
            "active → published",
            "published → suspended",
            "suspended → published",
        ]
    );
    assert!(
        changes
            .iter()
            .skip(1)
            .filter(|c| c["summary"] != "convention-sent → signed-by-beneficiary")
            .all(|c| c["actor"] == "0511223355")
    );
    assert_eq!(changes[5]["actor"], FLEET_KBO, "the beneficiary signed");
    assert_eq!(changes[9]["reason"], reason);
    assert_eq!(changes[3]["reason"], received, "every step keeps its reason");
    let records = read_records(&h.demo.config.audit.dir).unwrap();
    for c in &changes {
        let seq = c["audit_seq"].as_u64().unwrap();
        let r = records.iter().find(|r| r.seq == seq).unwrap();
        assert_eq!(r.record.kind, RecordKind::PolicyChange);
        let expect = format!("policy v{}:", c["version"]);
        assert!(r.record.justification.as_deref().unwrap().starts_with(&expect));
    }
    assert_eq!(h.demo.gateway.policy.version(), version0 + 11);

    // Terminated by DIV with its reason (not by the beneficiary): refused in both
    // environments, off the publication, and final.
    let ended = "the beneficiary ended its fleet management activity";
    let a = transition(&h, FLEET, CONVENTION, "terminated", Some("ours")).await;
    assert_eq!(a.code(), Some("ADMIN_ROLE_MISSING"), "{}", a.text());
    let a = transition(&h, "div", CONVENTION, "terminated", None).await;
    assert_eq!(a.code(), Some("REQUEST_INVALID"), "an end says why: {}", a.text());
    let a = transition(&h, "div", CONVENTION, "terminated", Some(ended)).await;
    assert_eq!(a.status, StatusCode::OK, "{}", a.text());
    assert_eq!(a.json().unwrap()["change"]["summary"], "published → terminated");
    for who in [FLEET, FLEET_INT] {
        let a = fleet_call(&h, who).await;
        assert_eq!(a.code(), Some("INSTRUMENT_NOT_ACTIVE"), "{who}: {}", a.text());
    }
    assert!(!references(&published(&h).await.0).contains(&CONVENTION.to_owned()));
    let a = transition(&h, "div", CONVENTION, "active", None).await;
    assert_eq!(a.code(), Some("TRANSITION_NOT_ALLOWED"), "terminated is final: {}", a.text());
    let a = h.ctl("div", Method::GET, &format!("/instruments/{}", tests::enc(CONVENTION)), None).await;
    let ins = a.json().unwrap();
    assert_eq!((ins["state"].clone(), ins["steps"][8]["reason"].clone()), (json!("terminated"), json!(ended)));
    let version = h.demo.gateway.policy.version();
    assert_eq!(version, version0 + 12);

    // The store is the source of truth: a restart brings the same policy back.
    let key = h.demo.gateway.audit.public_key;
    let (cfg, _dir) = h.stop().await;
    assert_eq!(verify_dir(&cfg.audit.dir, &key).unwrap().problem, None);
    tests::verifies_by_the_document(&cfg.audit.dir, &key);
    let gw = gateway::server::start(&cfg).await.unwrap();
    assert_eq!(gw.policy.version(), version);
    let model = gw.policy.model();
    let ins = model.instruments.iter().find(|i| i.reference == CONVENTION).unwrap();
    assert_eq!(policies::lifecycle::state_of(ins), "terminated");
    gw.shutdown().await;
}

#[tokio::test]
async fn the_sigedis_path_framework_authorization_adhesion_consent_call() {
    let h = Harness::start().await.unwrap();
    let framework = json!({
        "reference": "CSI/SSH/26/010", "kind": "general", "source": "sigedis", "status": "active",
        "title": "Deliberation 26/010 – framework for DB2P datatransfer (second generation)",
        "authority": "CSI-SSH", "number": "26/010", "date": "2026-02-10",
        "eligible": ["financial-institution", "insurer"],
    });
    let special = json!({
        "reference": "CSI/SSH/26/010/FI", "kind": "general", "parent": "CSI/SSH/26/010", "status": "active",
        "title": "Special authorization: financial institutions × supplementary pension data",
        "authority": "CSI-SSH", "number": "26/010-FI", "date": "2026-03-02", "eligible": ["financial-institution"],
        "grants": [{
            "id": "sigedis-fi-v2", "recipient": { "adherents": true }, "service": "sigedis.pensions",
            "purposes": ["SUPPLEMENTARY_PENSION_INFO"], "consent": true,
            "fields": ["organiser", "planType", "acquiredReserves", "situationDate"],
        }],
    });
    for body in [framework, special] {
        let a = h.ctl("sigedis", Method::POST, "/instruments", Some(body)).await;
        assert_eq!(a.status, StatusCode::CREATED, "{}", a.text());
    }
    let call = |h: &Harness| {
        let client = h.client("bank-a");
        async move {
            let subject = person();
            let headers = [
                ("x-legal-basis", "CSI/SSH/26/010/FI"),
                ("x-purpose", "SUPPLEMENTARY_PENSION_INFO"),
                ("x-subject", subject.as_str()),
            ];
            send(&client, Method::GET, "/sigedis/pensions", &headers, Bytes::new()).await.unwrap()
        }
    };
    assert_eq!(call(&h).await.code(), Some("ADHESION_MISSING"));

    // Seed 001 §3: the request names the organisation (official name, seat), the person who
    // asks and in which capacity, a reference, and carries the evaluation form.
    let adhesion = |org: &str, confirmed: bool| {
        json!({
            "org": org, "official_name": "Bank A NV (synthetic)", "seat": "Rue Royale 1, 1000 Brussels",
            "requested_by": "An Janssens", "capacity": "Head of retirement planning",
            "reference": "ADH-2026-0042", "modalities_confirmed": confirmed,
            "evaluation_form": { "title": "Evaluation form DB2P", "sha256": "7a".repeat(32) },
            "mandate": { "title": "Power of attorney", "reference": "BA-PROXY-2026-3" },
        })
    };
    let path = format!("/instruments/{}/adhesions", tests::enc("CSI/SSH/26/010/FI"));
    let step_path = |org: &str| format!("/instruments/{}/adhesions/{org}/transitions", tests::enc("CSI/SSH/26/010/FI"));
    // No caller-chosen date: the gateway's clock stamps the request.
    let mut dated = adhesion("0456123494", true);
    dated["date"] = json!("2020-01-01");
    let a = h.ctl("bank-a", Method::POST, &path, Some(dated)).await;
    assert_eq!(a.code(), Some("REQUEST_INVALID"), "{}", a.text());
    let mut no_form = adhesion("0456123494", true);
    no_form["evaluation_form"] = Value::Null;
    let a = h.ctl("bank-a", Method::POST, &path, Some(no_form)).await;
    assert_eq!(a.code(), Some("POLICY_INVALID"), "{}", a.text());
    assert!(a.text().contains("evaluation form"), "{}", a.text());
    // A trading company is outside the sector: it cannot adhere.
    let a = h.ctl("company", Method::POST, &path, Some(adhesion("0765432146", true))).await;
    assert_eq!((a.status, a.code()), (StatusCode::FORBIDDEN, Some("ADHESION_NOT_ELIGIBLE")), "{}", a.text());
    assert!(
        a.text().contains("a company cannot adhere to 'CSI/SSH/26/010/FI': it is open to financial-institution only")
    );
    // An insurer may adhere to the framework but not to the financial institutions' authorization.
    let a = h.ctl("insurer", Method::POST, &path, Some(adhesion("0411330181", true))).await;
    assert_eq!(a.code(), Some("ADHESION_NOT_ELIGIBLE"));
    // A bank may not adhere for another bank, and must confirm the modalities.
    let a = h.ctl("bank-b", Method::POST, &path, Some(adhesion("0456123494", true))).await;
    assert_eq!(a.code(), Some("ADMIN_ROLE_MISSING"));
    let a = h.ctl("bank-a", Method::POST, &path, Some(adhesion("0456123494", false))).await;
    assert_eq!(a.code(), Some("POLICY_INVALID"), "{}", a.text());
    assert!(a.text().contains("modalities_confirmed: the adherent must confirm the modalities"), "{}", a.text());
    // Bank A asks to adhere: a request, which opens nothing.
    let a = h.ctl("bank-a", Method::POST, &path, Some(adhesion("0456123494", true))).await;
    assert_eq!(a.status, StatusCode::CREATED, "{}", a.text());
    let item = a.json().unwrap()["item"].clone();
    assert_eq!((item["state"].clone(), item["date"].clone()), (json!("requested"), json!(today(&h).to_string())));
    assert_eq!(item["evaluation_form"]["title"], "Evaluation form DB2P");
    let a = h.ctl("bank-a", Method::POST, &path, Some(adhesion("0456123494", true))).await;
    assert_eq!(a.code(), Some("ALREADY_EXISTS"));
    assert_eq!(call(&h).await.code(), Some("ADHESION_MISSING"), "a request opens nothing");
    // The CSI examines it (the bank cannot approve itself, nor Sigedis skip the steps).
    let approve =
        json!({ "to": "approved", "documents": [{ "title": "CSI decision", "reference": "CSI/SSH/26/010/FI/A-17" }] });
    let a = h.ctl("bank-a", Method::POST, &step_path("0456123494"), Some(approve.clone())).await;
    assert_eq!(a.code(), Some("ADMIN_ROLE_MISSING"), "{}", a.text());
    let a = h.ctl("sigedis", Method::POST, &step_path("0456123494"), Some(json!({ "to": "active" }))).await;
    assert_eq!(a.code(), Some("TRANSITION_NOT_ALLOWED"), "{}", a.text());
    assert!(a.text().contains("from requested the possible steps are: approved, refused, withdrawn"), "{}", a.text());
    let a = h.ctl("csi-ssh", Method::POST, &step_path("0456123494"), Some(json!({ "to": "approved" }))).await;
    assert_eq!(a.code(), Some("REQUEST_INVALID"), "the decision is evidence: {}", a.text());
    let a = h.ctl("csi-ssh", Method::POST, &step_path("0456123494"), Some(approve)).await;
    assert_eq!(a.status, StatusCode::OK, "{}", a.text());
    assert_eq!(call(&h).await.code(), Some("ADHESION_MISSING"), "approved, not yet onboarded");
    // §4: the bank returns the onboarding documentation; then Sigedis confirms it.
    let onboard = json!({ "to": "onboarding", "documents": [{ "title": "Onboarding DB2PDataTransfer", "sha256": "3c".repeat(32) }] });
    let a = h.ctl("csi-ssh", Method::POST, &step_path("0456123494"), Some(onboard.clone())).await;
    assert_eq!(a.code(), Some("ADMIN_ROLE_MISSING"), "{}", a.text());
    let a = h.ctl("bank-a", Method::POST, &step_path("0456123494"), Some(onboard)).await;
    assert_eq!(a.status, StatusCode::OK, "{}", a.text());
    let a = h.ctl("bank-a", Method::POST, &step_path("0456123494"), Some(json!({ "to": "active" }))).await;
    assert_eq!(a.code(), Some("ADMIN_ROLE_MISSING"), "the bank cannot activate itself");
    let a = h
        .ctl(
            "sigedis",
            Method::POST,
            &step_path("0456123494"),
            Some(json!({ "to": "active", "reason": "onboarding complete" })),
        )
        .await;
    assert_eq!(a.status, StatusCode::OK, "{}", a.text());
    let item = a.json().unwrap()["item"].clone();
    let steps: Vec<(&str, &str)> = item["steps"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| (s["to"].as_str().unwrap(), s["role"].as_str().unwrap()))
        .collect();
    assert_eq!(
        steps,
        [
            ("requested", "the organisation itself"),
            ("approved", "issuing authority"),
            ("onboarding", "the organisation itself"),
            ("active", "data owner"),
        ]
    );
    assert_eq!(item["active_since"], json!(today(&h).to_string()));
    // Bank B asks too; the CSI refuses (not bank B, nor bank A): final.
    let mut b = adhesion("0456789034", true);
    b["official_name"] = json!("Bank B NV (synthetic)");
    assert_eq!(h.ctl("bank-b", Method::POST, &path, Some(b)).await.status, StatusCode::CREATED);
    for who in ["bank-b", "bank-a"] {
        let refusal = json!({ "to": "refused", "reason": "x" });
        let a = h.ctl(who, Method::POST, &step_path("0456789034"), Some(refusal)).await;
        assert_eq!(a.code(), Some("ADMIN_ROLE_MISSING"), "{who}: {}", a.text());
    }
    let a = h.ctl("csi-ssh", Method::POST, &step_path("0456789034"), Some(json!({ "to": "refused" }))).await;
    assert_eq!(a.code(), Some("REQUEST_INVALID"), "a refusal says why");
    let refused = json!({ "to": "refused", "reason": "evaluation form incomplete" });
    assert_eq!(h.ctl("csi-ssh", Method::POST, &step_path("0456789034"), Some(refused)).await.status, StatusCode::OK);
    let a = h
        .ctl(
            "bank-b",
            Method::POST,
            &step_path("0456789034"),
            Some(json!({ "to": "onboarding", "documents": [{ "title": "x", "reference": "y" }] })),
        )
        .await;
    assert_eq!(a.code(), Some("TRANSITION_NOT_ALLOWED"), "{}", a.text());

    // Adhered, but the citizen has not consented yet; then consents through the portal.
    assert_eq!(call(&h).await.code(), Some("CONSENT_MISSING"));
    let consent = json!({
        "subject": person(), "recipient": { "org": "0456123494" }, "service": "sigedis.pensions",
        "purpose": "SUPPLEMENTARY_PENSION_INFO", "valid_until": "2027-12-31", "evidence": "portal-session-7781",
    });
    let a = h.ctl("citizen-portal", Method::POST, "/consents", Some(consent)).await;
    assert_eq!(a.status, StatusCode::CREATED, "{}", a.text());
    let a = call(&h).await;
    assert_eq!(a.status, StatusCode::OK, "{}", a.text());
    let doc = a.json().unwrap();
    let plans = doc["plans"].as_array().unwrap();
    assert!(
        plans.iter().all(|p| p.get("organiser").is_some() && p.get("institution").is_none()),
        "the new grant's fields: {doc}"
    );

    // The general instruments are published with their adherents.
    let (pubdoc, html) = published(&h).await;
    let fi = pubdoc["instruments"].as_array().unwrap().iter().find(|i| i["reference"] == "CSI/SSH/26/010/FI").unwrap();
    // Only the adherent in force, with the day it took effect; nothing of the request.
    assert_eq!(
        fi["adherents"],
        json!([{ "organisation": "0456123494", "name": "Bank A (synthetic)", "date": today(&h).to_string() }])
    );
    assert!(html.contains("Bank A (synthetic)"));
    for private in ["An Janssens", "ADH-2026-0042", "Evaluation form", "Rue Royale", "evaluation form incomplete"] {
        assert!(!html.contains(private) && !pubdoc.to_string().contains(private), "{private} is not public");
    }

    // Sigedis suspends its datatransfer (an adherent cannot), then lifts the suspension.
    let a = transition(&h, "bank-a", "CSI/SSH/26/010/FI", "suspended", Some("ours")).await;
    assert_eq!(a.code(), Some("ADMIN_ROLE_MISSING"), "{}", a.text());
    let why = "Sigedis suspended its datatransfer activities";
    let a = transition(&h, "sigedis", "CSI/SSH/26/010/FI", "suspended", Some(why)).await;
    assert_eq!(a.status, StatusCode::OK, "{}", a.text());
    let a = call(&h).await;
    assert_eq!(a.code(), Some("FLOW_SUSPENDED"));
    assert!(a.json().unwrap()["detail"].as_str().unwrap().contains(why));
    let a = transition(&h, "sigedis", "CSI/SSH/26/010/FI", "active", None).await;
    assert_eq!(a.status, StatusCode::OK);
    assert_eq!(call(&h).await.status, StatusCode::OK);
    // The seed flow of bank A (another instrument) was never affected.
    assert_eq!(sigedis(&h.client("bank-b"), &person(), &[]).await.unwrap().code(), Some("CONSENT_MISSING"));

    // Bank A withdraws its adhesion (another bank cannot): at once, and off the publication.
    let a = h
        .ctl("bank-b", Method::POST, &step_path("0456123494"), Some(json!({ "to": "withdrawn", "reason": "x" })))
        .await;
    assert_eq!(a.code(), Some("ADMIN_ROLE_MISSING"), "{}", a.text());
    let a = h.ctl("bank-a", Method::POST, &step_path("0456123494"), Some(json!({ "to": "withdrawn" }))).await;
    assert_eq!(a.code(), Some("REQUEST_INVALID"), "a withdrawal says why");
    let a = h
        .ctl(
            "bank-a",
            Method::POST,
            &step_path("0456123494"),
            Some(json!({ "to": "withdrawn", "reason": "service discontinued" })),
        )
        .await;
    assert_eq!(a.status, StatusCode::OK, "{}", a.text());
    assert_eq!(call(&h).await.code(), Some("ADHESION_MISSING"));
    let (pubdoc, _) = published(&h).await;
    let fi = pubdoc["instruments"].as_array().unwrap().iter().find(|i| i["reference"] == "CSI/SSH/26/010/FI").unwrap();
    assert_eq!(fi["adherents"], json!([]));
}

/// The art. 8 element keys, in order.
fn elements() -> Vec<&'static str> {
    policies::model::ProtocolElements::default().elements().iter().map(|(_, key, _)| *key).collect()
}

fn protocol(reference: &str, without: Option<usize>) -> Value {
    let mut stated = serde_json::Map::new();
    for (i, e) in elements().iter().enumerate() {
        if Some(i) != without {
            stated.insert((*e).to_owned(), json!(format!("element {} of the protocol", i + 1)));
        }
    }
    json!({
        "reference": reference, "kind": "protocol", "source": "associations", "status": "draft",
        "title": "Protocol between the association register and agency B", "protocol": stated,
        "grants": [{
            "id": format!("{reference}-agency-b"), "recipient": { "org": "0208567816" },
            "service": "associations.association", "purposes": ["SUBSIDY_CONTROL"], "fields": ["name", "status"],
        }],
    })
}

#[tokio::test]
async fn a_protocol_missing_any_of_the_13_elements_is_refused_precisely() {
    let h = Harness::start().await.unwrap();
    let mut details = HashSet::new();
    let names = elements();
    assert_eq!(names.len(), 13);
    for (i, name) in names.iter().enumerate() {
        let a = h
            .ctl("digitaal-vlaanderen", Method::POST, "/instruments", Some(protocol("VL/PROT/2026/050", Some(i))))
            .await;
        assert_eq!((a.status, a.code()), (StatusCode::UNPROCESSABLE_ENTITY, Some("PROTOCOL_INCOMPLETE")), "{name}");
        let detail = a.json().unwrap()["detail"].as_str().unwrap().to_owned();
        assert_eq!(detail, format!("protocol.{name}: protocol lacks element ({}) {name}", i + 1));
        details.insert(detail);
    }
    assert_eq!(details.len(), 13, "13 distinct refusals");
    // An element present but blank is missing too; and nothing was registered meanwhile.
    let mut blank = protocol("VL/PROT/2026/050", None);
    blank["protocol"]["sanctions"] = json!("   ");
    let a = h.ctl("digitaal-vlaanderen", Method::POST, "/instruments", Some(blank)).await;
    assert_eq!(a.code(), Some("PROTOCOL_INCOMPLETE"));
    let a = h.ctl("digitaal-vlaanderen", Method::GET, "/instruments?kind=protocol", None).await;
    assert!(!a.text().contains("VL/PROT/2026/050"));

    // The other party cannot register it about the data owner's source.
    let a = h.ctl("agency-b", Method::POST, "/instruments", Some(protocol("VL/PROT/2026/050", None))).await;
    assert_eq!(a.code(), Some("ADMIN_ROLE_MISSING"), "{}", a.text());
    // Complete, it is registered as a draft; it enters into force after the DPO's favourable
    // advice (seed 002, art. 8), given by the privacy office of the source — not by the other
    // party — and published once active, with its elements.
    let a = h.ctl("digitaal-vlaanderen", Method::POST, "/instruments", Some(protocol("VL/PROT/2026/050", None))).await;
    assert_eq!(a.status, StatusCode::CREATED, "{}", a.text());
    assert!(!references(&published(&h).await.0).contains(&"VL/PROT/2026/050".to_owned()));
    let agency_b = |h: &Harness| {
        let client = h.client("agency-b");
        async move {
            let v = vcode();
            let headers =
                [("x-legal-basis", "VL/PROT/2026/050"), ("x-purpose", "SUBSIDY_CONTROL"), ("x-subject", v.as_str())];
            send(&client, Method::GET, "/associations/association", &headers, Bytes::new()).await.unwrap()
        }
    };
    assert_eq!(agency_b(&h).await.code(), Some("INSTRUMENT_NOT_ACTIVE"), "a draft answers nothing");
    let a = transition(&h, "digitaal-vlaanderen", "VL/PROT/2026/050", "active", None).await;
    assert_eq!(a.code(), Some("TRANSITION_NOT_ALLOWED"), "{}", a.text());
    assert!(a.text().contains("favourable advice of the DPO"), "{}", a.text());
    let advice_path = format!("/instruments/{}/advice", tests::enc("VL/PROT/2026/050"));
    let advice = |favourable: bool, reference: &str| {
        json!({ "reference": reference, "favourable": favourable,
        "documents": [{ "title": "DPO advice", "reference": reference }] })
    };
    let a = h.ctl("agency-b", Method::POST, &advice_path, Some(advice(true, "DPO-AB-1"))).await;
    assert_eq!(a.code(), Some("ADMIN_ROLE_MISSING"), "{}", a.text());
    let a = h.ctl("digitaal-vlaanderen", Method::POST, &advice_path, Some(advice(false, "DPO-DV-2026-049"))).await;
    assert_eq!(a.status, StatusCode::OK, "{}", a.text());
    let a = transition(&h, "digitaal-vlaanderen", "VL/PROT/2026/050", "active", None).await;
    assert_eq!(a.code(), Some("TRANSITION_NOT_ALLOWED"), "an unfavourable advice: {}", a.text());
    let a = h.ctl("digitaal-vlaanderen", Method::POST, &advice_path, Some(advice(true, "DPO-DV-2026-050"))).await;
    assert_eq!(a.status, StatusCode::OK, "{}", a.text());
    let item = a.json().unwrap()["item"].clone();
    assert_eq!(item["dpo_advice"], "DPO-DV-2026-050");
    assert_eq!(item["advice"].as_array().unwrap().len(), 2, "both advices are kept: {item}");
    assert_eq!(
        (item["advice"][1]["by"].clone(), item["advice"][1]["office"].clone()),
        (json!("0316000165"), json!("dpo"))
    );
    let a =
        transition(&h, "digitaal-vlaanderen", "VL/PROT/2026/050", "active", Some("signed by both controllers")).await;
    assert_eq!(a.status, StatusCode::OK, "{}", a.text());
    let a = h.ctl("digitaal-vlaanderen", Method::POST, &advice_path, Some(advice(false, "late"))).await;
    assert_eq!(a.code(), Some("TRANSITION_NOT_ALLOWED"), "the advice precedes the entry into force");
    // In production: agency B obtains exactly the granted items; then suspended and back.
    let a = agency_b(&h).await;
    assert_eq!(a.status, StatusCode::OK, "{}", a.text());
    let keys: BTreeSet<String> = a.json().unwrap().as_object().unwrap().keys().cloned().collect();
    assert!(keys.contains("name") && keys.contains("status") && !keys.contains("representatives"), "{keys:?}");
    let a = transition(&h, "agency-b", "VL/PROT/2026/050", "suspended", Some("mine")).await;
    assert_eq!(a.code(), Some("ADMIN_ROLE_MISSING"), "the other party does not suspend: {}", a.text());
    let a = transition(&h, "digitaal-vlaanderen", "VL/PROT/2026/050", "suspended", Some("DPO review")).await;
    assert_eq!(a.status, StatusCode::OK, "{}", a.text());
    assert_eq!(agency_b(&h).await.code(), Some("FLOW_SUSPENDED"));
    let a = transition(&h, "digitaal-vlaanderen", "VL/PROT/2026/050", "active", Some("review closed")).await;
    assert_eq!(a.status, StatusCode::OK, "{}", a.text());
    assert_eq!(agency_b(&h).await.status, StatusCode::OK);
    let (doc, html) = published(&h).await;
    let p = doc["instruments"].as_array().unwrap().iter().find(|i| i["reference"] == "VL/PROT/2026/050").unwrap();
    assert_eq!(p["protocol"].as_array().unwrap().len(), 13);
    assert!(p.get("advice").is_none() && p.get("steps").is_none(), "{p}");
    assert!(html.contains("element 13 of the protocol"));
    // An unknown state is named as such.
    let a = transition(&h, "digitaal-vlaanderen", "VL/PROT/2026/050", "published", None).await;
    assert_eq!(a.code(), Some("REQUEST_INVALID"));
    assert!(a.text().contains("'published' is not a step of the instrument procedure"), "{}", a.text());

    // Revoked by the data owner with its reason (not by the other party): at once, off the
    // publication, final; the reasons of the steps are kept.
    let a = transition(&h, "agency-b", "VL/PROT/2026/050", "revoked", Some("ours")).await;
    assert_eq!(a.code(), Some("ADMIN_ROLE_MISSING"), "{}", a.text());
    let a = transition(&h, "digitaal-vlaanderen", "VL/PROT/2026/050", "revoked", None).await;
    assert_eq!(a.code(), Some("REQUEST_INVALID"), "{}", a.text());
    let why = "replaced by the register's new protocol";
    let a = transition(&h, "digitaal-vlaanderen", "VL/PROT/2026/050", "revoked", Some(why)).await;
    assert_eq!(a.status, StatusCode::OK, "{}", a.text());
    assert_eq!(agency_b(&h).await.code(), Some("INSTRUMENT_NOT_ACTIVE"));
    assert!(!references(&published(&h).await.0).contains(&"VL/PROT/2026/050".to_owned()));
    let a = transition(&h, "digitaal-vlaanderen", "VL/PROT/2026/050", "active", Some("again")).await;
    assert_eq!(a.code(), Some("TRANSITION_NOT_ALLOWED"), "revoked is final: {}", a.text());
    let a = h
        .ctl("digitaal-vlaanderen", Method::GET, &format!("/instruments/{}", tests::enc("VL/PROT/2026/050")), None)
        .await;
    let steps: Vec<(String, String)> = a.json().unwrap()["steps"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| (s["to"].as_str().unwrap().to_owned(), s["reason"].as_str().unwrap_or_default().to_owned()))
        .collect();
    let expect: Vec<(String, String)> = [
        ("active", "signed by both controllers"),
        ("suspended", "DPO review"),
        ("active", "review closed"),
        ("revoked", why),
    ]
    .iter()
    .map(|(a, b)| ((*a).to_owned(), (*b).to_owned()))
    .collect();
    assert_eq!(steps, expect);
}

fn today(h: &Harness) -> policies::model::Date {
    policies::model::Date::from_days((h.demo.gateway.policy.now_ms() / 86_400_000) as i64).unwrap()
}

fn days_from(d: policies::model::Date, n: i64) -> String {
    policies::model::Date::from_days(d.days() + n).unwrap().to_string()
}

async fn rn_person(h: &Harness, end_user: &str) -> Answer {
    let mut b = [0u8; 11];
    let subject = adapters::rn::sandbox::Register::persons()[0].digits(&mut b).to_owned();
    let headers = [
        ("x-legal-basis", "BOSA/LRA/2024"),
        ("x-purpose", "LRA_REGISTRATION"),
        ("x-subject", subject.as_str()),
        ("x-end-user", end_user),
    ];
    send(&h.client("municipality"), Method::GET, "/rn/person", &headers, Bytes::new()).await.unwrap()
}

#[tokio::test]
async fn roles_expire_at_once_and_renewal_restores_them() {
    let h = Harness::start().await.unwrap();
    let t = today(&h);
    // Officer 2's role ended on 2025-12-31.
    assert_eq!(rn_person(&h, "lra-officer-2").await.code(), Some("END_USER_ROLE_MISSING"));
    let role = |from: String, until: String| {
        json!({ "org": "0207000176", "end_user": "lra-officer-2", "role": "local-registration-officer",
                "valid_from": from, "valid_until": until })
    };
    // Another organisation cannot renew the municipality's roles.
    let a = h.ctl(ASSOC_CALLER, Method::POST, "/roles", Some(role(days_from(t, -1), days_from(t, 360)))).await;
    assert_eq!(a.code(), Some("ADMIN_ROLE_MISSING"));
    let a = h.ctl("municipality", Method::POST, "/roles", Some(role(days_from(t, -1), days_from(t, 360)))).await;
    assert_eq!(a.status, StatusCode::OK, "{}", a.text());
    assert!(a.json().unwrap()["change"]["summary"].as_str().unwrap().starts_with("renewed"));
    assert_eq!(rn_person(&h, "lra-officer-2").await.status, StatusCode::OK);
    // Ended yesterday: refused at once.
    let a = h.ctl("admin", Method::POST, "/roles", Some(role(days_from(t, -30), days_from(t, -1)))).await;
    assert_eq!(a.status, StatusCode::OK);
    let a = rn_person(&h, "lra-officer-2").await;
    assert_eq!(a.code(), Some("END_USER_ROLE_MISSING"));
    assert!(a.text().contains("expired"), "{}", a.text());
    let a = h.ctl("municipality", Method::GET, "/roles?org=0207000176", None).await;
    assert_eq!(a.json().unwrap()["count"], 2);
}

#[tokio::test]
async fn an_exceptional_access_is_approved_tacitly_after_7_days_unless_remarked() {
    let h = Harness::start().await.unwrap();
    let t = today(&h);
    let access = |id: &str, user: &str| {
        json!({
            "id": id, "instrument": "BOSA/LRA/2024", "end_user": user,
            "service": "rn.person", "purposes": ["LRA_REGISTRATION"], "fields": ["names", "birthDate"],
            "justification": "replacement of an officer on leave", "valid_until": days_from(t, 90),
        })
    };
    // The requester sets no date: an advice date in the request is refused.
    let mut dated = access("x-temp-0", "temp-0");
    dated["advice_date"] = json!(days_from(t, -8));
    let a = h.ctl("municipality", Method::POST, "/exceptional-accesses", Some(dated)).await;
    assert_eq!(a.code(), Some("REQUEST_INVALID"), "{}", a.text());
    assert!(a.text().contains("advice_date"), "{}", a.text());
    let a = h.ctl("municipality", Method::POST, "/exceptional-accesses", Some(access("x-temp-1", "temp-1"))).await;
    assert_eq!(a.status, StatusCode::CREATED, "{}", a.text());
    let a = h.ctl("municipality", Method::POST, "/exceptional-accesses", Some(access("x-temp-2", "temp-2"))).await;
    assert_eq!(a.status, StatusCode::CREATED, "{}", a.text());
    let a = h.ctl("bosa", Method::GET, "/exceptional-accesses", None).await;
    assert!(a.text().contains("awaiting the privacy office's advice"), "{}", a.text());
    // Without an advice nothing happens, however long one waits.
    h.demo.gateway.policy.advance_clock(Duration::from_secs(30 * 86_400));
    assert_ne!(rn_person(&h, "temp-1").await.status, StatusCode::OK);
    h.demo.gateway.policy.reset_clock();
    // The requester cannot advise on its own request; BOSA's privacy office (BOSA) does.
    let advice = json!({ "reference": "BOSA-DPO-2026-17", "favourable": true });
    let a = h.ctl("municipality", Method::POST, "/exceptional-accesses/x-temp-1/advice", Some(advice.clone())).await;
    assert_eq!(a.code(), Some("ADMIN_ROLE_MISSING"), "{}", a.text());
    for id in ["x-temp-1", "x-temp-2"] {
        let a = h.ctl("bosa", Method::POST, &format!("/exceptional-accesses/{id}/advice"), Some(advice.clone())).await;
        assert_eq!(a.status, StatusCode::OK, "{}", a.text());
    }
    // Within the 7 days: not yet approved.
    assert_ne!(rn_person(&h, "temp-1").await.status, StatusCode::OK);
    let a = h.ctl("bosa", Method::GET, "/exceptional-accesses", None).await;
    assert!(a.text().contains("awaiting remarks until"), "{}", a.text());
    // The municipality cannot object to its own request; BOSA (the data owner) objects to one.
    let remark = json!({ "remark": "the end user's function does not justify it" });
    let a = h.ctl("municipality", Method::POST, "/exceptional-accesses/x-temp-2/remark", Some(remark.clone())).await;
    assert_eq!(a.code(), Some("ADMIN_ROLE_MISSING"));
    let a = h.ctl("bosa", Method::POST, "/exceptional-accesses/x-temp-2/remark", Some(remark.clone())).await;
    assert_eq!(a.status, StatusCode::OK, "{}", a.text());

    // Eight days later (the gateway's clock moved, nobody waits).
    h.demo.gateway.policy.advance_clock(Duration::from_secs(8 * 86_400));
    let a = rn_person(&h, "temp-1").await;
    assert_eq!(a.status, StatusCode::OK, "approved tacitly: {}", a.text());
    let doc = a.json().unwrap();
    assert!(doc.get("names").is_some() && doc.get("address").is_none(), "only the access's fields: {doc}");
    assert_ne!(rn_person(&h, "temp-2").await.status, StatusCode::OK, "a remark within 7 days stops it");
    // Too late for a remark now; the data owner withdraws it instead, at once.
    let a = h.ctl("bosa", Method::POST, "/exceptional-accesses/x-temp-1/remark", Some(remark)).await;
    assert_eq!(a.code(), Some("TRANSITION_NOT_ALLOWED"));
    assert!(a.text().contains("approved tacitly on"), "{}", a.text());
    let a = h.ctl("bosa", Method::GET, "/exceptional-accesses", None).await;
    assert!(a.text().contains("approved tacitly on") && a.text().contains("refused (a remark"), "{}", a.text());
    let withdraw = json!({ "reason": "the officer is back" });
    let a = h.ctl("bosa", Method::POST, "/exceptional-accesses/x-temp-1/withdraw", Some(withdraw)).await;
    assert_eq!(a.status, StatusCode::OK, "{}", a.text());
    assert_ne!(rn_person(&h, "temp-1").await.status, StatusCode::OK, "withdrawn: refused at once");
}

#[tokio::test]
async fn bundle_export_and_import_go_the_same_way() {
    let h = Harness::start().await.unwrap();
    let before = h.demo.gateway.policy.model();
    let a = h.ctl("admin", Method::GET, "/policy/export", None).await;
    assert_eq!(a.status, StatusCode::OK);
    let exported = a.text();
    // The export is a bundle that reads back to the same policy.
    let back = policies::bundle::load_texts([("export", exported.as_str())]).unwrap();
    assert_eq!(back, *before);
    assert_eq!(h.ctl("div", Method::GET, "/policy/export", None).await.code(), Some("ADMIN_ROLE_MISSING"));
    // Re-importing it is one more version, recorded like any change.
    let v = h.demo.gateway.policy.version();
    let client = h.control_client("admin");
    let a =
        send(&client, Method::POST, "/policy/import", &[("content-type", "application/toml")], Bytes::from(exported))
            .await
            .unwrap();
    tests::openapi::check("POST", "/policy/import", &a);
    assert_eq!(a.status, StatusCode::OK, "{}", a.text());
    assert_eq!(h.demo.gateway.policy.version(), v + 1);
    // A broken bundle changes nothing and says where it is wrong.
    let broken = "[[instruments]]\nreference = \"X\"\nkind = \"protocol\"\ntitle = \"t\"\nstatus = \"active\"\n";
    let a = send(&client, Method::POST, "/policy/import", &[], Bytes::from(broken)).await.unwrap();
    tests::openapi::check("POST", "/policy/import", &a);
    assert_eq!(a.code(), Some("POLICY_INVALID"));
    assert!(a.text().contains("protocol"), "{}", a.text());
    assert_eq!(h.demo.gateway.policy.version(), v + 1);
    assert_eq!(association(&h.client(ASSOC_CALLER), &vcode(), &[]).await.unwrap().status, StatusCode::OK);
}

#[tokio::test]
async fn the_openapi_document_validates_and_matches_the_served_api() {
    let h = Harness::start().await.unwrap();
    // A real OpenAPI validator (scripts/test installs openapi-spec-validator).
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../gateway/openapi.json");
    let out = std::process::Command::new("python3")
        .args([
            "-c",
            "import sys\nfrom openapi_spec_validator import validate\nfrom openapi_spec_validator.readers import read_from_filename\nd, _ = read_from_filename(sys.argv[1])\nvalidate(d)\nprint('valid')",
            path,
        ])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "openapi.json does not validate (or openapi-spec-validator is missing; scripts/test installs it): {}",
        String::from_utf8_lossy(&out.stderr)
    );
    // The served document is the one in the repository.
    let a = h.ctl("insurer", Method::GET, "/openapi.json", None).await;
    assert_eq!(a.text(), gateway::admin::OPENAPI);
    // It documents exactly the operations the router serves.
    let doc = tests::openapi::document();
    let mut documented = HashSet::new();
    for (path, ops) in doc["paths"].as_object().unwrap() {
        for method in ops.as_object().unwrap().keys() {
            documented.insert((method.to_uppercase(), path.clone()));
        }
    }
    let served: HashSet<(String, String)> =
        gateway::admin::routes::ROUTES.iter().map(|(m, p)| ((*m).to_owned(), (*p).to_owned())).collect();
    assert_eq!(documented, served);
    // Every documented operation is served (none answers "no resource at this path"), and
    // every answer follows the document (checked inside `ctl`).
    for (method, template) in &served {
        let path = template.replace("{reference}", "CSI%2FAF%2F18%2F2023").replace("{id}", "none");
        let m = Method::from_bytes(method.as_bytes()).unwrap();
        let body = (m == Method::POST).then(|| json!({}));
        let a = h.ctl("admin", m, &path, body).await;
        assert_ne!(a.code(), Some("SERVICE_UNKNOWN"), "{method} {template}: {}", a.text());
    }
    // Reads of every listing, as a data owner.
    for path in
        ["/organisations", "/sources", "/services", "/instruments", "/roles", "/exceptional-accesses", "/changes"]
    {
        let a = h.ctl("div", Method::GET, path, None).await;
        assert_eq!(a.status, StatusCode::OK, "{path}: {}", a.text());
    }
    let a = h.ctl("div", Method::DELETE, "/instruments", None).await;
    assert_eq!(a.code(), Some("METHOD_NOT_ALLOWED"));
    assert_eq!(a.headers.get("allow").and_then(|v| v.to_str().ok()), Some("GET, POST"), "RFC 9110 §15.5.6");
    // Parameters outside the documented schema are refused, not ignored (Schemathesis ST201).
    for path in ["/changes?limit=0", "/instruments?kind=null", "/instruments?kind=protocol&kind=protocol"] {
        let a = h.ctl("admin", Method::GET, path, None).await;
        assert_eq!(a.code(), Some("REQUEST_INVALID"), "{path}: {}", a.text());
    }
}
