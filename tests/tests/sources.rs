//! The sources behind the gateway over real TLS, one by one: DIV (SOAP/XML), the Flemish
//! account-number and contact-data sources, and the National Register search by name. For
//! each: a permitted call returns exactly the granted fields; a narrower grant returns fewer;
//! bodies outside the request layout are refused with `LAYOUT_VIOLATION` and never reach the
//! source; an answer outside the layout yields `UPSTREAM_LAYOUT_VIOLATION` and no data.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use adapters::div::sandbox::{Holder, Register};
use adapters::xml;
use bytes::Bytes;
use gateway::audit::SubjectRef;
use gateway::audit::verify::read_records;
use gateway::demo::{
    ACCOUNTS_LEGAL_BASIS, ACCOUNTS_PURPOSE, ASSOC_CALLER, BILLION_LAUGHS, CONTACTS_LEGAL_BASIS, CONTACTS_PURPOSE,
    DIV_CALLER, DIV_LEGAL_BASIS, DIV_PURPOSE,
};
use http::{Method, StatusCode};
use tests::{Answer, Harness, send};

const DIV: &str = "/div/vehicle";

async fn div(h: &Harness, body: String, rid: &str) -> Answer {
    let headers = [("x-legal-basis", DIV_LEGAL_BASIS), ("x-purpose", DIV_PURPOSE), ("x-request-id", rid)];
    send(&h.client(DIV_CALLER), Method::POST, DIV, &headers, Bytes::from(body)).await.unwrap()
}

/// The element names under `Vehicle` in a SOAP answer.
fn vehicle_elements(a: &Answer) -> Vec<String> {
    let payload = xml::open_envelope(&a.body, xml::LIMITS).unwrap();
    payload.find("Vehicle").unwrap().children.iter().map(|c| c.name.clone()).collect()
}

/// A real SOAP upstream that counts its calls and answers `answer` with `status`.
async fn soap_upstream(status: u16, answer: String) -> (adapters::sandbox::SandboxServer, Arc<AtomicUsize>) {
    let hits = Arc::new(AtomicUsize::new(0));
    let h = hits.clone();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let server = adapters::sandbox::serve(listener, move |_| {
        h.fetch_add(1, Ordering::SeqCst);
        let r = adapters::sandbox::xml(StatusCode::from_u16(status).unwrap(), answer.clone());
        async move { r }
    })
    .unwrap();
    (server, hits)
}

#[tokio::test]
async fn div_answers_exactly_the_granted_elements_and_records_the_holder() {
    let h = Harness::start().await.unwrap();
    let register = Register::generate();
    // A vehicle held by a person and one held by a company, by plate and by VIN.
    let person = register.vehicles().iter().find(|v| matches!(v.holder, Holder::Person(_))).unwrap();
    let company = register.vehicles().iter().find(|v| matches!(v.holder, Holder::Organisation(_))).unwrap();
    let a = div(&h, adapters::div::request_by_plate(person.plate.as_str()), "div-1").await;
    assert_eq!(a.status, StatusCode::OK, "{}", a.text());
    assert!(a.headers["content-type"].to_str().unwrap().starts_with("text/xml"));
    // The insurer's convention grants plate, vin, make, model, first registration, holder id
    // and name, insurer: not fuel, registration date or the holder's address.
    assert_eq!(vehicle_elements(&a), ["Plate", "Vin", "Make", "Model", "FirstRegistrationDate", "Holder", "Insurer"]);
    assert!(!a.text().contains("<Address>") && !a.text().contains("<Fuel>"));
    let b = div(&h, adapters::div::request_by_vin(company.vin.as_str()), "div-2").await;
    assert_eq!(b.status, StatusCode::OK, "{}", b.text());
    assert!(b.text().contains("<EnterpriseNumber>"));

    let records = read_records(&h.demo.config.audit.dir).unwrap();
    let find = |rid: &str| records.iter().find(|r| r.record.request_id == rid).unwrap().record.clone();
    let Holder::Person(niss) = person.holder else { unreachable!() };
    let mut d = [0u8; 11];
    assert!(find("div-1").subjects.contains(&SubjectRef::Person(niss.digits(&mut d).to_owned())), "the holder left");
    let Holder::Organisation(kbo) = company.holder else { unreachable!() };
    let mut d = [0u8; 10];
    assert!(find("div-2").subjects.contains(&SubjectRef::Organisation(kbo.digits(&mut d).to_owned())));
    let unknown = div(&h, adapters::div::request_by_plate("1-ZZZ-999"), "div-3").await;
    assert_eq!(unknown.code(), Some("SUBJECT_NOT_FOUND"));
}

fn narrow_div(name: &str, text: String) -> String {
    if name != "div.toml" {
        return text;
    }
    let from =
        r#"fields = ["plate", "vin", "make", "model", "firstRegistrationDate", "holderId", "holderName", "insurer"]"#;
    assert!(text.contains(from));
    text.replace(from, r#"fields = ["plate", "make"]"#)
}

#[tokio::test]
async fn a_narrower_div_grant_returns_fewer_elements_and_no_holder() {
    let h = Harness::with(&[], Some(narrow_div)).await.unwrap();
    let register = Register::generate();
    let v = &register.vehicles()[0];
    let a = div(&h, adapters::div::request_by_plate(v.plate.as_str()), "narrow").await;
    assert_eq!(a.status, StatusCode::OK, "{}", a.text());
    assert_eq!(vehicle_elements(&a), ["Plate", "Make"]);
    let records = read_records(&h.demo.config.audit.dir).unwrap();
    let r = records.iter().find(|r| r.record.request_id == "narrow").unwrap();
    assert!(r.record.subjects.is_empty(), "no holder left: {:?}", r.record.subjects);
}

#[tokio::test]
async fn div_bodies_outside_the_layout_never_reach_the_source() {
    let register = Register::generate();
    let v = &register.vehicles()[0];
    let (upstream, hits) = soap_upstream(200, xml::envelope(&v.doc)).await;
    let url = upstream.url();
    let h = Harness::with_overrides(&[("PASSERELLE__SOURCES__DIV__UPSTREAM", url.as_str())]).await.unwrap();
    let ok = adapters::div::request_by_plate(v.plate.as_str());
    let cases = [
        ("malformed", ok.replace("</Plate>", "")),
        ("wrong element", ok.replace("Plate>", "Colour>")),
        ("wrong type", ok.replace(v.plate.as_str(), "ABC-1234")),
        (
            "oversized",
            ok.replace(
                "<soap:Body>",
                &format!("<soap:Header>{}</soap:Header><soap:Body>", "<x:a xmlns:x=\"urn:x\"/>".repeat(1000)),
            ),
        ),
        ("hostile", BILLION_LAUGHS.to_owned()),
        (
            "not SOAP",
            format!(
                "<GetVehicleRequest xmlns=\"{}\"><Plate>{}</Plate></GetVehicleRequest>",
                adapters::div::NS,
                v.plate
            ),
        ),
        ("JSON", "{\"plate\":\"1-ABC-123\"}".to_owned()),
        ("empty", String::new()),
    ];
    for (what, body) in cases {
        let a = div(&h, body, &what.replace(' ', "-")).await;
        assert_eq!(
            (a.status, a.code()),
            (StatusCode::INTERNAL_SERVER_ERROR, Some("LAYOUT_VIOLATION")),
            "{what}: {}",
            a.text()
        );
        assert!(a.text().contains("<faultcode>soap:Client</faultcode>"), "{what}: a SOAP Fault: {}", a.text());
    }
    assert_eq!(hits.load(Ordering::SeqCst), 0, "no refused body reached the source");
    let a = div(&h, ok, "fine").await;
    assert_eq!(a.status, StatusCode::OK, "{}", a.text());
    assert_eq!(hits.load(Ordering::SeqCst), 1);
}

/// An XML service refuses in SOAP, whatever the refusal: `GET ?wsdl` on a POST-only service is
/// a SOAP Fault with `Allow`, and a SOAP 1.2 Envelope gets SOAP 1.1's `VersionMismatch`.
#[tokio::test]
async fn an_xml_service_refuses_in_soap() {
    let h = Harness::start().await.unwrap();
    let headers = [("x-legal-basis", DIV_LEGAL_BASIS), ("x-purpose", DIV_PURPOSE)];
    let a = send(&h.client(DIV_CALLER), Method::GET, "/div/vehicle?wsdl", &headers, Bytes::new()).await.unwrap();
    assert_eq!((a.status, a.code()), (StatusCode::INTERNAL_SERVER_ERROR, Some("METHOD_NOT_ALLOWED")), "{}", a.text());
    assert!(a.text().contains("<faultcode>soap:Client</faultcode>"), "{}", a.text());
    assert_eq!(a.headers.get("allow").and_then(|v| v.to_str().ok()), Some("POST"));
    assert!(a.headers.get("content-type").and_then(|v| v.to_str().ok()).is_some_and(|c| c.starts_with("text/xml")));
    let soap12 = adapters::div::request_by_plate("1-ABC-123")
        .replace(adapters::xml::SOAP_NS, "http://www.w3.org/2003/05/soap-envelope");
    let a = div(&h, soap12, "soap-1-2").await;
    assert_eq!(
        (a.status, a.code()),
        (StatusCode::INTERNAL_SERVER_ERROR, Some("SOAP_VERSION_MISMATCH")),
        "{}",
        a.text()
    );
    assert!(a.text().contains("<faultcode>soap:VersionMismatch</faultcode>"), "{}", a.text());
    // A certificate without an enterprise number is refused before any work — in SOAP too.
    let a = send(&h.client(tests::NO_KBO), Method::POST, DIV, &headers, Bytes::new()).await.unwrap();
    assert_eq!(a.code(), Some("CLIENT_CERT_INVALID"));
    assert!(a.text().contains("<faultcode>soap:Client</faultcode>"), "{}", a.text());
    let records = read_records(&h.demo.config.audit.dir).unwrap();
    assert!(
        records
            .iter()
            .any(|r| r.record.request_id == "soap-1-2" && r.record.code.as_deref() == Some("SOAP_VERSION_MISMATCH"))
    );
}

#[tokio::test]
async fn a_div_answer_outside_the_layout_never_leaves() {
    let register = Register::generate();
    let v = &register.vehicles()[0];
    let good = xml::envelope(&v.doc);
    let mut d = [0u8; 11];
    let holder = match v.holder {
        Holder::Person(n) => n.digits(&mut d).to_owned(),
        Holder::Organisation(k) => k.to_string(),
    };
    for (bad, why) in [
        (good.replace("<Fuel>", "<Colour>red</Colour><Fuel>"), "Colour"),
        (good.replacen("<Plate>", "<Plate>X", 1), "Plate"),
        (good.replace("<Country>BE</Country>", ""), "Country is missing"),
        (good.replace("<soap:Body>", "<!DOCTYPE x><soap:Body>"), "DOCTYPE"),
        ("<html>oops</html>".to_owned(), "SOAP"),
    ] {
        let (upstream, _) = soap_upstream(200, bad).await;
        let url = upstream.url();
        let h = Harness::with_overrides(&[("PASSERELLE__SOURCES__DIV__UPSTREAM", url.as_str())]).await.unwrap();
        let a = div(&h, adapters::div::request_by_plate(v.plate.as_str()), "bad-answer").await;
        assert_eq!(a.code(), Some("UPSTREAM_LAYOUT_VIOLATION"), "{why}: {}", a.text());
        assert!(a.text().contains(why), "{why}: {}", a.text());
        assert!(!a.text().contains(&holder) && !a.text().contains(v.vin.as_str()), "no data leaves");
        upstream.abort();
    }
}

// --- Flemish account-number and contact-data sources -------------------------------------

fn citizen(i: usize) -> String {
    let mut d = [0u8; 11];
    adapters::accounts::sandbox::Register::persons()[i].digits(&mut d).to_owned()
}

async fn consent(h: &Harness, subject: &str, service: &str, purpose: &str, scope: &[&str]) {
    consent_to(h, subject, serde_json::json!({"kind": "flemish-instance"}), service, purpose, scope).await
}

async fn consent_to(
    h: &Harness,
    subject: &str,
    recipient: serde_json::Value,
    service: &str,
    purpose: &str,
    scope: &[&str],
) {
    let body = serde_json::json!({
        "subject": subject, "recipient": recipient, "service": service, "purpose": purpose,
        "scope": scope, "valid_until": "2030-12-31", "evidence": "test",
    });
    let a = send(&h.control_client("citizen-portal"), Method::POST, "/consents", &[], Bytes::from(body.to_string()))
        .await
        .unwrap();
    assert_eq!(a.status, StatusCode::CREATED, "{}", a.text());
}

async fn flemish(h: &Harness, path: &str, basis: &str, purpose: &str, subject: &str, body: &str) -> Answer {
    let headers = [("x-legal-basis", basis), ("x-purpose", purpose), ("x-subject", subject)];
    send(&h.client(ASSOC_CALLER), Method::POST, path, &headers, Bytes::from(body.to_owned())).await.unwrap()
}

fn keys(v: &serde_json::Value) -> Vec<String> {
    v.as_object().unwrap().keys().cloned().collect()
}

#[tokio::test]
async fn an_account_falls_back_to_the_default_only_where_the_consent_scope_allows() {
    let h = Harness::start().await.unwrap();
    let register = adapters::accounts::sandbox::Register::generate();
    // Citizen 0 linked no account to any service; citizen 1 linked one to one service.
    let (c0, c1) = (citizen(0), citizen(1));
    let linked = register.citizen(adapters::accounts::sandbox::Register::persons()[1]).unwrap().service_ibans[0];
    let call = |who: String, service: &'static str| {
        let h = &h;
        async move {
            let body = serde_json::json!({ "publicService": service }).to_string();
            flemish(h, "/accounts/iban", ACCOUNTS_LEGAL_BASIS, ACCOUNTS_PURPOSE, &who, &body).await
        }
    };
    assert_eq!(call(c0.clone(), "GROEIPAKKET").await.code(), Some("CONSENT_MISSING"));
    consent(&h, &c0, "accounts.iban", ACCOUNTS_PURPOSE, &["GROEIPAKKET"]).await;
    consent(&h, &c1, "accounts.iban", ACCOUNTS_PURPOSE, &[]).await;

    // The scope covers GROEIPAKKET: the default stands in for it.
    let a = call(c0.clone(), "GROEIPAKKET").await;
    assert_eq!(a.status, StatusCode::OK, "{}", a.text());
    assert_eq!(keys(&a.json().unwrap()), ["defaultIban", "lastValidation", "niss", "publicService"]);
    // Not STUDIETOELAGE: the default may not be used for it, so nothing is released.
    let a = call(c0.clone(), "STUDIETOELAGE").await;
    assert_eq!((a.status, a.code()), (StatusCode::FORBIDDEN, Some("CONSENT_SCOPE_EXCEEDED")), "{}", a.text());
    assert!(!a.text().contains("BE"), "no account in the refusal");
    // Citizen 1 linked an account to this service: that one leaves, not the default, even
    // with an empty scope.
    let a = call(c1.clone(), linked.0).await;
    assert_eq!(a.status, StatusCode::OK, "{}", a.text());
    let v = a.json().unwrap();
    assert_eq!(v["serviceIban"], linked.1.to_string());
    assert!(v.get("defaultIban").is_none());
    let other = adapters::accounts::PUBLIC_SERVICES.iter().find(|s| **s != linked.0).unwrap();
    let a = call(c1, other).await;
    assert_eq!(a.code(), Some("CONSENT_SCOPE_EXCEEDED"), "{}", a.text());
}

#[tokio::test]
async fn contact_data_follow_the_same_rule_and_the_request_layout() {
    let (upstream, hits) = tests::counting_upstream(serde_json::json!({})).await.unwrap();
    let h = Harness::start().await.unwrap();
    let c0 = citizen(0);
    consent(&h, &c0, "contacts.contact", CONTACTS_PURPOSE, &["*"]).await;
    let call = |body: &'static str| {
        let (h, c0) = (&h, c0.clone());
        async move { flemish(h, "/contacts/contact", CONTACTS_LEGAL_BASIS, CONTACTS_PURPOSE, &c0, body).await }
    };
    let a = call(r#"{"publicService":"ZORGBUDGET"}"#).await;
    assert_eq!(a.status, StatusCode::OK, "{}", a.text());
    let v = a.json().unwrap();
    assert!(v["default"]["email"].is_string(), "{v}");
    for (body, path) in [
        (r#"{"publicService":"ZORGBUDGET""#, "not JSON"),
        (r#"{"publicService":"ZORGBUDGET","iban":"x"}"#, "additionalProperties"),
        (r#"{"publicService":42}"#, "/publicService"),
        (r#"{"service":"ZORGBUDGET"}"#, "service is not in the layout"),
        ("{}", "required"),
        ("", "none was sent"),
    ] {
        let a = call(body).await;
        assert_eq!((a.status, a.code()), (StatusCode::UNPROCESSABLE_ENTITY, Some("LAYOUT_VIOLATION")), "{body}");
        assert!(a.json().unwrap()["detail"].as_str().unwrap().contains(path), "{body}: {}", a.text());
    }
    let big = format!(r#"{{"publicService":"{}"}}"#, "A".repeat(5000));
    let a = flemish(&h, "/contacts/contact", CONTACTS_LEGAL_BASIS, CONTACTS_PURPOSE, &c0, &big).await;
    assert_eq!(a.code(), Some("LAYOUT_VIOLATION"));
    assert!(a.text().contains("larger than this layout allows"));
    drop(h);
    // None of those reached a source: shown with a counting upstream in the source's place.
    let url = upstream.url();
    let h = Harness::with_overrides(&[("PASSERELLE__SOURCES__CONTACTS__UPSTREAM", url.as_str())]).await.unwrap();
    consent(&h, &c0, "contacts.contact", CONTACTS_PURPOSE, &["*"]).await;
    for body in [r#"{"publicService":42}"#, r#"{"x":1}"#, "garbage"] {
        let a = flemish(&h, "/contacts/contact", CONTACTS_LEGAL_BASIS, CONTACTS_PURPOSE, &c0, body).await;
        assert_eq!(a.code(), Some("LAYOUT_VIOLATION"));
    }
    assert_eq!(hits.load(Ordering::SeqCst), 0);
    // And an answer outside the layout (the counting upstream's `{}`) never leaves.
    let a = flemish(
        &h,
        "/contacts/contact",
        CONTACTS_LEGAL_BASIS,
        CONTACTS_PURPOSE,
        &c0,
        r#"{"publicService":"JOBBONUS"}"#,
    )
    .await;
    assert_eq!(a.code(), Some("UPSTREAM_LAYOUT_VIOLATION"));
}

// --- National Register search by name --------------------------------------------------------

#[tokio::test]
async fn an_lra_search_by_name_returns_the_persons_and_records_each_of_them() {
    let h = Harness::start().await.unwrap();
    let (niss, query) = gateway::demo::rn_search_example().unwrap();
    let search = |user: &'static str, body: String, rid: &'static str| {
        let h = &h;
        async move {
            let headers = [
                ("x-legal-basis", "BOSA/LRA/2024"),
                ("x-purpose", "LRA_REGISTRATION"),
                ("x-end-user", user),
                ("x-request-id", rid),
            ];
            send(&h.client("municipality"), Method::POST, "/rn/persons/search", &headers, Bytes::from(body))
                .await
                .unwrap()
        }
    };
    let a = search("lra-officer-1", query.clone(), "search-1").await;
    assert_eq!(a.status, StatusCode::OK, "{}", a.text());
    let persons = a.json().unwrap()["persons"].as_array().unwrap().clone();
    assert!(persons.iter().any(|p| p["niss"] == niss.as_str()));
    let records = read_records(&h.demo.config.audit.dir).unwrap();
    let r = records.iter().find(|r| r.record.request_id == "search-1").unwrap();
    assert_eq!(r.record.subjects.len(), persons.len(), "every person found is recorded");
    assert!(r.record.subjects.contains(&SubjectRef::Person(niss)));
    assert_eq!(search("lra-officer-2", query, "search-2").await.code(), Some("END_USER_ROLE_MISSING"));
    let a = search("lra-officer-1", r#"{"lastName":"Peeters","birthDate":"1 May 1980"}"#.into(), "search-3").await;
    assert_eq!(a.code(), Some("LAYOUT_VIOLATION"));
    assert!(a.text().contains("/birthDate"));
}

// --- The association register's public subset ------------------------------------------------

#[tokio::test]
async fn the_public_subset_shows_only_public_items_of_publishable_associations() {
    let h = Harness::start().await.unwrap();
    let addr = h.demo.gateway.public_addr.unwrap();
    let anyone = gateway::client::MtlsClient::new(
        addr,
        h.demo.pki.ca.cert_pem().as_bytes(),
        None,
        gateway::client::HttpVersion::Http1,
    )
    .unwrap();
    let register = adapters::associations::sandbox::Register::generate();
    let all = adapters::associations::sandbox::Register::vcodes(adapters::associations::sandbox::POPULATION);
    let pick = |f: &dyn Fn(&adapters::associations::sandbox::Association) -> bool| {
        all.iter().map(|v| register.get(*v).unwrap()).find(|a| f(a)).unwrap().vcode.to_string()
    };
    let public = pick(&|a| a.active && !a.opted_out && a.kbo.is_some());
    let inactive = pick(&|a| !a.active);
    let opted_out = pick(&|a| a.active && a.opted_out);
    let get = |v: String| {
        let anyone = &anyone;
        async move { send(anyone, Method::GET, &format!("/public/associations/{v}"), &[], Bytes::new()).await.unwrap() }
    };
    let a = get(public.clone()).await;
    assert_eq!(a.status, StatusCode::OK, "{}", a.text());
    let mut got = keys(&a.json().unwrap());
    got.sort();
    let mut want: Vec<String> = adapters::associations::PUBLIC_FIELDS.iter().map(|s| s.to_string()).collect();
    want.sort();
    assert_eq!(got, want, "items 1–6, 9, 11, 12 only: no representatives, no bank account");
    for hidden in [inactive, opted_out, "V9999999".to_owned()] {
        let a = get(hidden).await;
        assert_eq!((a.status, a.code()), (StatusCode::NOT_FOUND, Some("SUBJECT_NOT_FOUND")), "{}", a.text());
        assert_eq!(a.json().unwrap()["detail"], "no public association has this vCode", "the same answer for all");
    }
    assert_eq!(get("X123".into()).await.code(), Some("SUBJECT_INVALID"));
    // The data plane still asks for a certificate: the public listener is a separate door.
    let data = gateway::client::MtlsClient::new(
        h.demo.gateway.data_addr,
        h.demo.pki.ca.cert_pem().as_bytes(),
        None,
        gateway::client::HttpVersion::Http1,
    )
    .unwrap();
    assert!(send(&data, Method::GET, &format!("/public/associations/{public}"), &[], Bytes::new()).await.is_err());
}

// --- HTTPS towards a source -----------------------------------------------------------------

/// A real TLS front for a plain sandbox: it requires a client certificate of the dev CA (the
/// data plane's own server config), counts the handshakes that presented one, and relays the
/// bytes to the sandbox.
async fn tls_front(
    listener: tokio::net::TcpListener,
    tls: &gateway::config::TlsConfig,
    backend: std::net::SocketAddr,
) -> Arc<AtomicUsize> {
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(gateway::tls::server_config(tls).unwrap()));
    let authenticated = Arc::new(AtomicUsize::new(0));
    let seen = authenticated.clone();
    tokio::spawn(async move {
        loop {
            let Ok((tcp, _)) = listener.accept().await else { continue };
            let (acceptor, seen) = (acceptor.clone(), seen.clone());
            tokio::spawn(async move {
                let Ok(mut tls) = acceptor.accept(tcp).await else { return };
                if tls.get_ref().1.peer_certificates().is_some_and(|c| !c.is_empty()) {
                    seen.fetch_add(1, Ordering::SeqCst);
                }
                let Ok(mut plain) = tokio::net::TcpStream::connect(backend).await else { return };
                let _ = tokio::io::copy_bidirectional(&mut tls, &mut plain).await;
            });
        }
    });
    authenticated
}

#[tokio::test]
async fn a_source_is_reached_over_https_with_the_gateway_client_certificate() {
    let sandbox =
        adapters::associations::sandbox::serve(tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap()).unwrap();
    for (case, tls, expect) in [
        (
            "with client certificate",
            &[("CA", "pki/ca.pem"), ("CERT", "pki/clients/admin.pem"), ("KEY", "pki/clients/admin.key")][..],
            None,
        ),
        ("without client certificate", &[("CA", "pki/ca.pem")][..], Some("UPSTREAM_UNAVAILABLE")),
    ] {
        let front = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("https://localhost:{}", front.local_addr().unwrap().port());
        let mut overrides: Vec<(String, String)> = vec![("PASSERELLE__SOURCES__ASSOCIATIONS__UPSTREAM".into(), url)];
        overrides
            .extend(tls.iter().map(|(k, v)| (format!("PASSERELLE__SOURCES__ASSOCIATIONS__TLS__{k}"), (*v).to_owned())));
        let pairs: Vec<(&str, &str)> = overrides.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
        let h = Harness::with_overrides(&pairs).await.unwrap();
        // No TLS settings for an https:// source: the gateway does not start, and says why.
        let without = Harness::with_overrides(&pairs[..1]).await.unwrap_err();
        assert!(format!("{without:#}").contains("sources.associations.tls"), "{without:#}");
        let authenticated = tls_front(front, &h.demo.config.tls, sandbox.addr).await;
        let a = tests::association(&h.client(ASSOC_CALLER), &tests::vcode(), &[]).await.unwrap();
        match expect {
            None => {
                assert_eq!(a.status, StatusCode::OK, "{case}: {}", a.text());
                assert!(authenticated.load(Ordering::SeqCst) >= 1, "{case}: the gateway presented its certificate");
            }
            Some(code) => {
                assert_eq!(a.code(), Some(code), "{case}: {}", a.text());
                assert_eq!(authenticated.load(Ordering::SeqCst), 0, "{case}");
            }
        }
    }
}

// --- Every JSON source: granted fields, fewer fields, bodies and answers outside the layout ---

fn swap(text: String, from: &str, to: &str) -> String {
    assert!(text.contains(from), "{from}");
    text.replace(from, to)
}

/// Every JSON source's grants narrowed to one or two fields.
fn narrow_all(name: &str, text: String) -> String {
    match name {
        "sigedis.toml" => swap(
            text,
            r#"  fields = ["organiser", "institution", "planType", "acquiredReserves", "acquiredBenefits", "situationDate"]"#,
            r#"  fields = ["planType"]"#,
        ),
        "lra.toml" => swap(
            text,
            r#"  fields = ["names", "birthDate", "birthPlace", "address", "sex"]"#,
            r#"  fields = ["birthDate"]"#,
        ),
        "flemish-sources.toml" => swap(
            swap(
                text,
                r#"  fields = ["defaultIban", "serviceIban", "lastValidation"]"#,
                r#"  fields = ["defaultIban"]"#,
            ),
            r#"  fields = ["email", "phone", "mobile", "preferred", "lastValidation"]"#,
            r#"  fields = ["email"]"#,
        ),
        _ => text,
    }
}

fn sorted(v: &serde_json::Value) -> Vec<String> {
    let mut k = keys(v);
    k.sort();
    k
}

/// One call per JSON source (consents given first): (source, answer).
async fn call_every_json_source(h: &Harness) -> Vec<(&'static str, Answer)> {
    let c0 = citizen(0);
    let pensioner = tests::person();
    let bank = serde_json::json!({"org": "0456123494"});
    consent_to(h, &pensioner, bank, "sigedis.pensions", tests::SIGEDIS_PURPOSE, &[]).await;
    consent(h, &c0, "accounts.iban", ACCOUNTS_PURPOSE, &["GROEIPAKKET"]).await;
    consent(h, &c0, "contacts.contact", CONTACTS_PURPOSE, &["*"]).await;
    let rn_person = {
        let mut d = [0u8; 11];
        adapters::rn::sandbox::Register::persons()[adapters::rn::sandbox::BIS].digits(&mut d).to_owned()
    };
    let (_, search) = gateway::demo::rn_search_example().unwrap();
    let lra = [("x-legal-basis", "BOSA/LRA/2024"), ("x-purpose", "LRA_REGISTRATION"), ("x-end-user", "lra-officer-1")];
    let mut out = Vec::new();
    out.push(("sigedis", tests::sigedis(&h.client(tests::SIGEDIS_CALLER), &pensioner, &[]).await.unwrap()));
    let mut hd = lra.to_vec();
    hd.push(("x-subject", rn_person.as_str()));
    out.push((
        "rn.person",
        send(&h.client("municipality"), Method::GET, "/rn/person", &hd, Bytes::new()).await.unwrap(),
    ));
    out.push((
        "rn.search",
        send(&h.client("municipality"), Method::POST, "/rn/persons/search", &lra, Bytes::from(search)).await.unwrap(),
    ));
    let body = r#"{"publicService":"GROEIPAKKET"}"#;
    out.push(("accounts", flemish(h, "/accounts/iban", ACCOUNTS_LEGAL_BASIS, ACCOUNTS_PURPOSE, &c0, body).await));
    out.push(("contacts", flemish(h, "/contacts/contact", CONTACTS_LEGAL_BASIS, CONTACTS_PURPOSE, &c0, body).await));
    out
}

/// The keys an answer carries, per source, at the level the grant's fields live.
fn granted_keys(source: &str, a: &Answer) -> Vec<String> {
    assert_eq!(a.status, StatusCode::OK, "{source}: {}", a.text());
    let v = a.json().unwrap();
    match source {
        "sigedis" => sorted(&v["plans"][0]),
        "rn.search" => sorted(&v["persons"][0]),
        "contacts" => sorted(&v["default"]).into_iter().chain(sorted(&v)).collect(),
        _ => sorted(&v),
    }
}

#[tokio::test]
async fn every_json_source_returns_exactly_the_granted_fields_and_fewer_for_a_narrower_grant() {
    let s = |v: &[&str]| v.iter().map(|x| x.to_string()).collect::<Vec<_>>();
    let full = [
        (
            "sigedis",
            s(&["acquiredBenefits", "acquiredReserves", "institution", "organiser", "planType", "situationDate"]),
        ),
        ("rn.person", s(&["address", "birthDate", "birthPlace", "names", "niss", "sex"])),
        ("rn.search", s(&["address", "birthDate", "birthPlace", "names", "niss", "sex"])),
        ("accounts", s(&["defaultIban", "lastValidation", "niss", "publicService"])),
        ("contacts", s(&["email", "mobile", "preferred", "default", "lastValidation", "niss", "publicService"])),
    ];
    let narrow = [
        ("sigedis", s(&["planType"])),
        ("rn.person", s(&["birthDate", "niss"])),
        ("rn.search", s(&["birthDate", "niss"])),
        ("accounts", s(&["defaultIban", "niss", "publicService"])),
        ("contacts", s(&["email", "default", "niss", "publicService"])),
    ];
    let h = Harness::start().await.unwrap();
    for ((source, a), (_, want)) in call_every_json_source(&h).await.iter().zip(&full) {
        let got = granted_keys(source, a);
        // The first citizen's default contact data may lack a phone number: compare what is there.
        if *source == "contacts" {
            assert!(got.iter().all(|k| want.contains(k) || k == "phone"), "{source}: {got:?}");
            assert!(want.iter().all(|k| got.contains(k)), "{source}: {got:?}");
        } else {
            assert_eq!(&got, want, "{source}");
        }
    }
    drop(h);
    let h = Harness::with(&[], Some(narrow_all)).await.unwrap();
    for ((source, a), (_, want)) in call_every_json_source(&h).await.iter().zip(&narrow) {
        assert_eq!(&granted_keys(source, a), want, "{source}: a narrower grant returns fewer fields");
    }
}

#[tokio::test]
async fn no_json_source_is_called_with_a_body_outside_its_layout_or_answers_outside_it() {
    // One counting upstream in the place of Sigedis, the National Register and the account
    // source; it answers `{"niss": 12}`, which follows none of their layouts.
    let (upstream, hits) = tests::counting_upstream(serde_json::json!({"niss": 12, "persons": "x"})).await.unwrap();
    let url = upstream.url();
    let h = Harness::with_overrides(&[
        ("PASSERELLE__SOURCES__SIGEDIS__UPSTREAM", url.as_str()),
        ("PASSERELLE__SOURCES__RN__UPSTREAM", url.as_str()),
        ("PASSERELLE__SOURCES__ACCOUNTS__UPSTREAM", url.as_str()),
    ])
    .await
    .unwrap();
    let c0 = citizen(0);
    let pensioner = tests::person();
    consent_to(
        &h,
        &pensioner,
        serde_json::json!({"org": "0456123494"}),
        "sigedis.pensions",
        tests::SIGEDIS_PURPOSE,
        &[],
    )
    .await;
    consent(&h, &c0, "accounts.iban", ACCOUNTS_PURPOSE, &["*"]).await;
    let lra = [("x-legal-basis", "BOSA/LRA/2024"), ("x-purpose", "LRA_REGISTRATION"), ("x-end-user", "lra-officer-1")];
    let sigedis_h = [
        ("x-legal-basis", tests::SIGEDIS_LEGAL_BASIS),
        ("x-purpose", tests::SIGEDIS_PURPOSE),
        ("x-subject", pensioner.as_str()),
    ];
    let bank = h.client(tests::SIGEDIS_CALLER);
    let officer = h.client("municipality");
    let big = format!(r#"{{"lastName":"{}","birthDate":"1980-01-01"}}"#, "x".repeat(5000));
    for body in [r#"{"lastName":"Peeters"}"#, r#"{"lastName":1,"birthDate":"1980-01-01"}"#, "{", big.as_str()] {
        let a = send(&officer, Method::POST, "/rn/persons/search", &lra, Bytes::from(body.to_owned())).await.unwrap();
        assert_eq!(a.code(), Some("LAYOUT_VIOLATION"), "rn.search {body:.40}");
    }
    for body in [r#"{"publicService":"groeipakket"}"#, r#"{"publicService":"GROEIPAKKET","x":1}"#, "[]"] {
        let a = flemish(&h, "/accounts/iban", ACCOUNTS_LEGAL_BASIS, ACCOUNTS_PURPOSE, &c0, body).await;
        assert_eq!(a.code(), Some("LAYOUT_VIOLATION"), "accounts {body}");
    }
    let a = send(&bank, Method::GET, "/sigedis/pensions", &sigedis_h, Bytes::from_static(b"{}")).await.unwrap();
    assert_eq!(a.code(), Some("LAYOUT_VIOLATION"), "sigedis takes no body");
    assert_eq!(hits.load(Ordering::SeqCst), 0, "no refused body reached a source");

    // Well-formed calls reach the upstream, whose answers break the layouts: nothing leaves.
    let (_, search) = gateway::demo::rn_search_example().unwrap();
    let answers = [
        send(&bank, Method::GET, "/sigedis/pensions", &sigedis_h, Bytes::new()).await.unwrap(),
        send(&officer, Method::POST, "/rn/persons/search", &lra, Bytes::from(search)).await.unwrap(),
        flemish(&h, "/accounts/iban", ACCOUNTS_LEGAL_BASIS, ACCOUNTS_PURPOSE, &c0, r#"{"publicService":"JOBBONUS"}"#)
            .await,
    ];
    for a in answers {
        assert_eq!((a.status, a.code()), (StatusCode::BAD_GATEWAY, Some("UPSTREAM_LAYOUT_VIOLATION")), "{}", a.text());
        assert!(!a.text().contains("\"x\""), "no data leaves: {}", a.text());
    }
    assert_eq!(hits.load(Ordering::SeqCst), 3);
}
