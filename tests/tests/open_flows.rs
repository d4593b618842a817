//! A data owner opens new flows end to end through the control plane only — no file edit, no
//! restart: SPF Finances registers its cadastre (an upstream, a generated sandbox as its test
//! side) and the JSON service `cadastre.cadastral-income` (seed 004); DIV registers the SOAP
//! service `div.history` from its XSD; a new third party is onboarded from its own certificate
//! requests; a convention on each service goes through its test phase (the cadastre's against
//! the generated sandbox) into production; the third party gets exactly the granted fields,
//! read by a real SOAP client (zeep) from the served WSDL, checked by `xmllint --schema` against
//! the registered XSD and by Python's `jsonschema` against the registered JSON Schema; and
//! everything is in the trail.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::process::Command;

use bytes::Bytes;
use gateway::client::{HttpVersion, MtlsClient};
use http::{Method, StatusCode};
use policies::ids::Kbo;
use serde_json::{Value, json};
use tests::{Answer, Harness, send};

/// The new third party: a notary's office (synthetic enterprise number, valid mod 97).
const NOTARY: &str = "0310010614";
const CADASTRE_DELIBERATION: &str = "CSI/AF/52/2026";
const CADASTRE_CONVENTION: &str = "FIN/CONV/2026/0001";
const HISTORY_CONVENTION: &str = "DIV/CONV/2026/0200";
const DIV_DELIBERATION: &str = "CSI/AF/18/2023";
const DEED: &str = "NOTARIAL_DEED";

fn cadastre_service() -> Value {
    adapters::cadastre::registration()
}

fn history_service(xsd: &str) -> Value {
    adapters::div::sandbox::history_registration(xsd)
}

fn xsd_file() -> String {
    std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../adapters/layouts/div.history.xsd")).unwrap()
}

/// Clients of the notary's own certificate on the data and control planes.
struct Notary {
    control: MtlsClient,
    data: MtlsClient,
    /// Its test-environment application.
    data_int: MtlsClient,
    /// The same, as PEM files (for zeep).
    cert_pem: String,
    key_pem: String,
}

async fn onboard(h: &Harness) -> Notary {
    let kbo = Kbo::parse(NOTARY).unwrap();
    let org = json!({ "kbo": NOTARY, "name": "Notary office (synthetic)", "kind": "company" });
    let a = h.ctl("admin", Method::POST, "/organisations", Some(org)).await;
    assert_eq!(a.status, StatusCode::CREATED, "{}", a.text());
    let path = format!("/organisations/{NOTARY}/certificates");
    let (request, key) = certs::csr(&certs::ClientSpec::org("Notary office (synthetic)", kbo)).unwrap();
    let a = h.ctl("admin", Method::POST, &path, Some(json!({ "csr": request }))).await;
    assert_eq!(a.status, StatusCode::CREATED, "{}", a.text());
    let cert = a.json().unwrap()["item"]["certificate"].as_str().unwrap().to_owned();
    let ca = h.demo.pki.ca.cert_pem();
    let client = |addr, c: &str, k: &str| {
        MtlsClient::new(addr, ca.as_bytes(), Some((c.as_bytes(), k.as_bytes())), HttpVersion::Http1).unwrap()
    };
    let control = client(h.demo.gateway.control_addr.unwrap(), &cert, &key);
    // The notary asks for its test application's certificate itself.
    let mut spec = certs::ClientSpec::org("Notary office test application", kbo);
    spec.environment = Some(certs::Environment::Integration);
    let (request, int_key) = certs::csr(&spec).unwrap();
    let body = Bytes::from(json!({ "csr": request }).to_string());
    let a = send(&control, Method::POST, &path, &[("content-type", "application/json")], body).await.unwrap();
    assert_eq!(a.status, StatusCode::CREATED, "{}", a.text());
    let int_cert = a.json().unwrap()["item"]["certificate"].as_str().unwrap().to_owned();
    Notary {
        data: client(h.demo.gateway.data_addr, &cert, &key),
        data_int: client(h.demo.gateway.data_addr, &int_cert, &int_key),
        control,
        cert_pem: cert,
        key_pem: key,
    }
}

async fn step(h: &Harness, who: &str, reference: &str, body: Value) -> Answer {
    h.ctl(who, Method::POST, &format!("/instruments/{}/transitions", tests::enc(reference)), Some(body)).await
}

/// A convention from its request to its test phase, each step by the party the seed names.
async fn to_test_phase(h: &Harness, owner: &str, notary: &Notary, reference: &str, layout_version: &str) {
    let ok = |a: Answer| assert_eq!(a.status, StatusCode::OK, "{}", a.text());
    ok(step(
        h,
        owner,
        reference,
        json!({ "to": "deliberation-received", "reason": "copy of the deliberation received" }),
    )
    .await);
    ok(step(
        h,
        owner,
        reference,
        json!({ "to": "convention-sent", "text_version": "standard convention 2026.1", "layout_version": layout_version }),
    )
    .await);
    let signed = json!({ "to": "signed-by-beneficiary", "signatory": { "name": "Notary N.", "capacity": "Notary" },
        "contact": { "name": "Office desk", "email": "desk@example.invalid", "phone": "+3220000001" } });
    let path = format!("/instruments/{}/transitions", tests::enc(reference));
    let a = send(
        &notary.control,
        Method::POST,
        &path,
        &[("content-type", "application/json")],
        Bytes::from(signed.to_string()),
    )
    .await
    .unwrap();
    assert_eq!(a.status, StatusCode::OK, "{}", a.text());
    ok(step(h, owner, reference, json!({ "to": "test-phase" })).await);
}

async fn activate(h: &Harness, owner: &str, reference: &str) {
    let a = step(
        h,
        owner,
        reference,
        json!({ "to": "active", "signatory": { "name": "Head of service", "capacity": "Director" } }),
    )
    .await;
    assert_eq!(a.status, StatusCode::OK, "{}", a.text());
}

async fn cadastre_call(client: &MtlsClient, owner: &str) -> Answer {
    let headers = [("x-legal-basis", CADASTRE_CONVENTION), ("x-purpose", DEED), ("x-subject", owner)];
    send(client, Method::GET, "/cadastre/cadastral-income", &headers, Bytes::new()).await.unwrap()
}

async fn history_call(client: &MtlsClient, plate: &str) -> Answer {
    let headers = [("x-legal-basis", HISTORY_CONVENTION), ("x-purpose", DEED), ("content-type", "text/xml")];
    let body = Bytes::from(adapters::div::sandbox::history_by_plate(plate));
    send(client, Method::POST, "/div/history", &headers, body).await.unwrap()
}

fn python(script: &str, args: &[&str]) -> String {
    let out = Command::new("python3").arg("-c").arg(script).args(args).output().expect("python3");
    assert!(
        out.status.success(),
        "python failed (scripts/test installs the checkers): {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

const JSONSCHEMA: &str = r#"
import json, sys
from jsonschema import Draft202012Validator
schema = json.load(open(sys.argv[1])); doc = json.load(open(sys.argv[2]))
Draft202012Validator.check_schema(schema)
errors = [e.message for e in Draft202012Validator(schema).iter_errors(doc)]
print("ok" if not errors else errors)
"#;

const OPENAPI: &str = r#"
import json, sys
from openapi_spec_validator import validate
validate(json.load(open(sys.argv[1])))
print("ok")
"#;

/// zeep, from the WSDL the data plane serves, over mTLS with the envelope headers in the HTTP
/// session; prints what it read.
const ZEEP: &str = r#"
import sys, requests, zeep
from zeep.transports import Transport
url, ca, cert, key, plate, basis, purpose = sys.argv[1:8]
s = requests.Session(); s.verify = ca; s.cert = (cert, key)
s.trust_env = False  # REQUESTS_CA_BUNDLE in the environment would replace the session's CA
s.headers.update({"X-Legal-Basis": basis, "X-Purpose": purpose})
client = zeep.Client(url, transport=Transport(session=s))
answer = client.service.GetVehicleHistory(Plate=plate)
print(answer["Plate"])
for e in answer["Entry"]:
    holder = e["Holder"]
    ident = holder["Id"]["Niss"] or holder["Id"]["EnterpriseNumber"]
    print(f"{e['From']}|{e['Until']}|{ident}|{holder['Name']}")
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_data_owner_opens_new_flows_through_the_control_plane_only() {
    let h = Harness::start().await.unwrap();
    let cadastre = adapters::cadastre::serve(tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap()).unwrap();
    let spf = gateway::demo::org_kbo("spf-finances").unwrap().to_string();
    let dir = tempfile::tempdir().unwrap();
    let version0 = h.demo.gateway.policy.version();

    // ── SPF Finances registers its cadastre: production upstream, generated sandbox as test side.
    let source = json!({ "id": "cadastre", "name": "Cadastre (SPF Finances)", "owner": spf,
        "upstream": { "url": cadastre.url(), "test": "sandbox", "timeout_ms": 2000 } });
    let a = h.ctl("bank-a", Method::POST, "/sources", Some(source.clone())).await;
    assert_eq!(a.code(), Some("ADMIN_ROLE_MISSING"), "{}", a.text());
    let mut with_tls = source.clone();
    with_tls["upstream"]["tls"] = json!({ "ca": "/etc/passwd" });
    let a = h.ctl("spf-finances", Method::POST, "/sources", Some(with_tls)).await;
    assert_eq!(a.code(), Some("ADMIN_ROLE_MISSING"), "TLS files are the integrator's: {}", a.text());
    // Only hosts the operator allows (control.upstream_hosts; the demo's: this host).
    let mut elsewhere = source.clone();
    elsewhere["upstream"]["url"] = "http://10.1.2.3:8080".into();
    let a = h.ctl("spf-finances", Method::POST, "/sources", Some(elsewhere)).await;
    assert_eq!(a.code(), Some("REGISTRATION_INVALID"), "{}", a.text());
    assert!(a.text().contains("host 10.1.2.3 is not one the operator allows"), "{}", a.text());
    let mut ftp = source.clone();
    ftp["upstream"]["url"] = "ftp://127.0.0.1/".into();
    let a = h.ctl("spf-finances", Method::POST, "/sources", Some(ftp)).await;
    assert_eq!(a.code(), Some("REGISTRATION_INVALID"), "{}", a.text());
    assert!(a.text().contains("is not an http:// or https:// URL with a host"), "{}", a.text());
    let a = h.ctl("spf-finances", Method::POST, "/sources", Some(source)).await;
    assert_eq!(a.status, StatusCode::CREATED, "{}", a.text());
    tests::openapi::check("POST", "/sources", &a);

    // Bad registrations are refused with what and where, and change nothing.
    let version = h.demo.gateway.policy.version();
    let mut wrong_path = cadastre_service();
    wrong_path["exposure"]["catalogue"][3]["path"] = "/parcels/*/income".into();
    let mut taken = cadastre_service();
    taken["exposure"]["path"] = "/div/vehicle".into();
    let mut unplaced = cadastre_service();
    unplaced["source"] = "patrimony".into();
    unplaced["id"] = "patrimony.income".into();
    for (body, want) in [
        (wrong_path, "catalogue path /parcels/*/income is nowhere in the response schema"),
        (taken, "path /div/vehicle of service cadastre.cadastral-income is already the path of service div.vehicle"),
        (unplaced, "source patrimony has no upstream"),
    ] {
        let a = h.ctl("spf-finances", Method::POST, "/services", Some(body)).await;
        assert_eq!(a.code(), Some("REGISTRATION_INVALID"), "{}", a.text());
        assert!(a.text().contains(want), "{want}: {}", a.text());
        tests::openapi::check("POST", "/services", &a);
    }
    let a = h.ctl("bank-a", Method::POST, "/services", Some(cadastre_service())).await;
    assert_eq!(a.code(), Some("ADMIN_ROLE_MISSING"), "{}", a.text());
    assert_eq!(h.demo.gateway.policy.version(), version, "nothing refused was committed");

    // Registered: the data plane routes it at once (no instrument yet: refused by the policy,
    // not an unknown service).
    let a = h.ctl("spf-finances", Method::POST, "/services", Some(cadastre_service())).await;
    assert_eq!(a.status, StatusCode::CREATED, "{}", a.text());
    assert_eq!(
        a.json().unwrap()["item"]["fields"],
        json!(["cadastralIncome", "coOwners", "municipality", "parcel", "share"])
    );
    let owner = adapters::synthetic::people(0xCAD, 1)[0];
    let mut digits = [0u8; 11];
    let owner = owner.digits(&mut digits).to_owned();
    let a = cadastre_call(&h.client("bank-a"), &owner).await;
    assert_ne!(a.code(), Some("SERVICE_UNKNOWN"), "{}", a.text());
    assert_eq!(a.status, StatusCode::FORBIDDEN, "{}", a.text());

    // The operations listener reports the new source's upstream.
    let (status, ready) = tests::ops_get(&h, "/readyz").await;
    assert_eq!(status, 200, "{ready}");
    let ready: Value = serde_json::from_str(&ready).unwrap();
    assert_eq!(ready["registered_sources"]["cadastre"], true, "{ready}");

    // ── DIV registers div.history from its XSD file; an XSD outside the subset is refused.
    let xsd = xsd_file();
    let outside = xsd.replace(r#"<xs:element name="Name" type="tns:Text128"/>"#, r#"<xs:any processContents="lax"/>"#);
    let a = h.ctl("div", Method::POST, "/services", Some(history_service(&outside))).await;
    assert_eq!(a.code(), Some("REGISTRATION_INVALID"), "{}", a.text());
    assert!(a.text().contains("xs:any at") && a.text().contains("outside the subset"), "{}", a.text());
    let a = h.ctl("div", Method::POST, "/services", Some(history_service(&xsd))).await;
    assert_eq!(a.status, StatusCode::CREATED, "{}", a.text());

    // ── Published descriptions: the listing, the OpenAPI document (valid OpenAPI 3.1), the WSDL.
    let public = h.public_client();
    let a = send(&public, Method::GET, "/public/services", &[], Bytes::new()).await.unwrap();
    assert_eq!(a.status, StatusCode::OK, "{}", a.text());
    let ids: Vec<String> = a.json().unwrap()["services"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["id"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(ids, ["cadastre.cadastral-income", "div.history"]);
    let a = send(&public, Method::GET, "/public/services/cadastre.cadastral-income.openapi.json", &[], Bytes::new())
        .await
        .unwrap();
    assert_eq!(a.status, StatusCode::OK, "{}", a.text());
    let doc = a.json().unwrap();
    assert_eq!(
        doc["servers"][0]["url"].as_str().unwrap().rsplit(':').next().unwrap(),
        h.demo.gateway.data_addr.port().to_string()
    );
    let f = dir.path().join("openapi.json");
    std::fs::write(&f, a.text()).unwrap();
    assert_eq!(python(OPENAPI, &[f.to_str().unwrap()]).trim(), "ok");
    let a = send(&public, Method::GET, "/public/services/div.history.wsdl", &[], Bytes::new()).await.unwrap();
    assert_eq!(a.status, StatusCode::OK, "{}", a.text());
    assert!(a.text().contains("<soap:address location=\"https://"), "{}", a.text());

    // ── A new third party, onboarded from its own certificate requests.
    let notary = onboard(&h).await;

    // ── The instruments: a deliberation for the cadastre, a convention on each service.
    let deliberation = json!({ "reference": CADASTRE_DELIBERATION, "kind": "deliberation",
        "title": "Délibération AF n° 52/2026 – cadastral income for notarial deeds", "authority": "CSI-AF",
        "number": "52/2026", "date": "2026-11-20", "source": "cadastre", "status": "active" });
    let a = h.ctl("spf-finances", Method::POST, "/instruments", Some(deliberation)).await;
    assert_eq!(a.status, StatusCode::CREATED, "{}", a.text());
    let convention = |reference: &str, parent: &str, service: &str, fields: Value| {
        json!({ "reference": reference, "kind": "convention", "parent": parent,
            "title": format!("Convention {reference} – notary office"),
            "grants": [{ "id": format!("{reference}-notary"), "recipient": { "org": NOTARY }, "service": service,
                         "purposes": [DEED], "fields": fields }] })
    };
    let a = h
        .ctl(
            "spf-finances",
            Method::POST,
            "/instruments",
            Some(convention(
                CADASTRE_CONVENTION,
                CADASTRE_DELIBERATION,
                "cadastre.cadastral-income",
                json!(["parcel", "cadastralIncome"]),
            )),
        )
        .await;
    assert_eq!(a.status, StatusCode::CREATED, "{}", a.text());
    let a = h
        .ctl(
            "div",
            Method::POST,
            "/instruments",
            Some(convention(HISTORY_CONVENTION, DIV_DELIBERATION, "div.history", json!(["periods", "holders"]))),
        )
        .await;
    assert_eq!(a.status, StatusCode::CREATED, "{}", a.text());
    to_test_phase(
        &h,
        "spf-finances",
        &notary,
        CADASTRE_CONVENTION,
        "cadastre.cadastral-income.response.schema.json v1",
    )
    .await;
    to_test_phase(&h, "div", &notary, HISTORY_CONVENTION, "div.history.xsd v1").await;

    // ── Test phase: the test application is answered by the generated sandbox, exactly the
    //    granted fields, following the registered schema; production is refused.
    let a = cadastre_call(&notary.data_int, &owner).await;
    assert_eq!(a.status, StatusCode::OK, "{}", a.text());
    let sandboxed = a.json().unwrap();
    for p in sandboxed["parcels"].as_array().unwrap() {
        let mut keys: Vec<&String> = p.as_object().unwrap().keys().collect();
        keys.sort();
        assert_eq!(keys, ["cadastralIncome", "parcel"], "{sandboxed}");
    }
    let schema = dir.path().join("schema.json");
    std::fs::write(&schema, adapters::cadastre::RESPONSE_SCHEMA).unwrap();
    let answer = dir.path().join("sandbox.json");
    std::fs::write(&answer, a.text()).unwrap();
    assert_eq!(python(JSONSCHEMA, &[schema.to_str().unwrap(), answer.to_str().unwrap()]).trim(), "ok");
    let a = cadastre_call(&notary.data, &owner).await;
    assert_eq!(a.code(), Some("INSTRUMENT_NOT_ACTIVE"), "{}", a.text());

    // ── Production.
    activate(&h, "spf-finances", CADASTRE_CONVENTION).await;
    activate(&h, "div", HISTORY_CONVENTION).await;
    let a = cadastre_call(&notary.data, &owner).await;
    assert_eq!(a.status, StatusCode::OK, "{}", a.text());
    let full = adapters::cadastre::parcels(policies::ids::Niss::parse(&owner).unwrap());
    let expected: Vec<Value> = full["parcels"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| json!({ "parcel": p["parcel"], "cadastralIncome": p["cadastralIncome"] }))
        .collect();
    assert_eq!(
        a.json().unwrap(),
        json!({ "niss": owner, "parcels": expected }),
        "the real source, reduced to the grant"
    );
    std::fs::write(&answer, a.text()).unwrap();
    assert_eq!(python(JSONSCHEMA, &[schema.to_str().unwrap(), answer.to_str().unwrap()]).trim(), "ok");
    // A field outside the grant is never asked for by the caller: it is simply not there.
    assert!(!a.text().contains("municipality") && !a.text().contains("coOwners"));

    // div.history: a live answer follows the registered XSD (xmllint), and zeep reads it
    // from the served WSDL unmodified.
    let (plate, _) = gateway::demo::div_vehicle().unwrap();
    let a = history_call(&notary.data, &plate).await;
    assert_eq!(a.status, StatusCode::OK, "{}", a.text());
    let payload = adapters::xml::open_envelope(&a.body, adapters::xml::LIMITS).unwrap();
    let mut text = String::new();
    adapters::xml::write(&payload, &mut text);
    let (xsd_path, doc_path) = (dir.path().join("div.history.xsd"), dir.path().join("answer.xml"));
    std::fs::write(&xsd_path, &xsd).unwrap();
    std::fs::write(&doc_path, &text).unwrap();
    let out = Command::new("xmllint")
        .args(["--noout", "--nonet", "--schema"])
        .arg(&xsd_path)
        .arg(&doc_path)
        .output()
        .expect("xmllint (libxml2-utils; scripts/test installs it)");
    assert!(out.status.success(), "xmllint: {}", String::from_utf8_lossy(&out.stderr));
    let pem = |name: &str, text: &str| {
        let p = dir.path().join(name);
        std::fs::write(&p, text).unwrap();
        p.to_str().unwrap().to_owned()
    };
    let ca = pem("ca.pem", &h.demo.pki.ca.cert_pem());
    let (cert, key) = (pem("notary.pem", &notary.cert_pem), pem("notary.key", &notary.key_pem));
    let wsdl = format!("https://localhost:{}/div/history?wsdl", h.demo.gateway.data_addr.port());
    let read = python(ZEEP, &[&wsdl, &ca, &cert, &key, &plate, HISTORY_CONVENTION, DEED]);
    let mut lines = read.lines();
    assert_eq!(lines.next(), Some(plate.as_str()));
    let entries: Vec<&str> = lines.collect();
    let holders = payload.children.iter().filter(|c| c.name == "Entry").count();
    assert_eq!(entries.len(), holders, "{read}");
    assert!(entries.iter().all(|e| e.split('|').count() == 4 && !e.contains("None|None")), "{read}");

    // ── Everything is in the trail: the registrations as policy changes, every call with its
    //    service, caller and instrument.
    let a = h.ctl("admin", Method::GET, &format!("/changes?after={version0}"), None).await;
    let changes = a.json().unwrap()["changes"].as_array().unwrap().clone();
    let ops: Vec<&str> = changes.iter().map(|c| c["operation"].as_str().unwrap()).collect();
    assert!(ops.iter().filter(|o| **o == "POST /services").count() == 2, "{ops:?}");
    assert!(ops.contains(&"POST /sources"), "{ops:?}");
    let justification = json!({ "case_reference": "FIN/2026/1", "legal_ground": "control of the new flows",
        "requested_by": "integrator" });
    let a = h
        .ctl("admin", Method::POST, "/audit/queries", Some(json!({ "caller": NOTARY, "justification": justification })))
        .await;
    assert_eq!(a.status, StatusCode::OK, "{}", a.text());
    let records = a.json().unwrap()["records"].as_array().unwrap().clone();
    let by_service =
        |s: &str, outcome: &str| records.iter().filter(|r| r["service"] == s && r["outcome"] == outcome).count();
    assert_eq!(by_service("cadastre.cadastral-income", "granted"), 2, "test phase and production: {records:?}");
    assert_eq!(by_service("cadastre.cadastral-income", "refused"), 1);
    assert!(by_service("div.history", "granted") >= 2, "the call and zeep's: {records:?}");
    let granted =
        records.iter().find(|r| r["service"] == "cadastre.cadastral-income" && r["outcome"] == "granted").unwrap();
    assert_eq!(granted["legal_basis"], CADASTRE_CONVENTION, "{granted}");
    cadastre.abort();
}
