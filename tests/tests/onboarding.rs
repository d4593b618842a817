//! A new organisation onboarded with a certificate signed from its own request (PKCS#10): the
//! key never leaves the organisation, the certificate carries exactly its registered
//! enterprise number, and the gateway accepts it over mTLS — unregistered, the control plane
//! answers that the organisation is not registered; registered by the integrator, it reads.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use bytes::Bytes;
use gateway::client::{HttpVersion, MtlsClient};
use http::{Method, StatusCode};
use policies::ids::Kbo;
use serde_json::{Value, json};
use tests::{Harness, send};

/// A synthetic enterprise number (valid mod 97) the seed policy does not know.
const NEWCOMER: &str = "0310010614";

#[tokio::test]
async fn a_certificate_signed_from_the_organisations_request_is_accepted() {
    let h = Harness::start().await.unwrap();
    let kbo = Kbo::parse(NEWCOMER).unwrap();
    // The organisation writes its key and its request.
    let (request, key) = certs::csr(&certs::ClientSpec::org("Newcomer (synthetic)", kbo)).unwrap();
    // The dev CA signs it for the registered number only.
    let ca = &h.demo.pki.ca;
    let signer = certs::CsrSigner::from_pem(&ca.cert_pem(), &ca.key_pem()).unwrap();
    let now = time::OffsetDateTime::now_utc();
    let other = Kbo::parse("0403019261").unwrap();
    assert!(matches!(signer.sign(&request, other, 365, now), Err(certs::CsrError::EnterpriseNumber { .. })));
    let signed = signer.sign(&request, kbo, 365, now).unwrap();
    assert_eq!(signed.identity.kbo, kbo);

    let addr = h.demo.gateway.control_addr.unwrap();
    let client = MtlsClient::new(
        addr,
        ca.cert_pem().as_bytes(),
        Some((signed.cert_pem.as_bytes(), key.as_bytes())),
        HttpVersion::Http1,
    )
    .unwrap();
    let a = send(&client, Method::GET, "/organisations", &[], Bytes::new()).await.unwrap();
    assert_eq!(a.code(), Some("ADMIN_ROLE_MISSING"), "{}", a.text());
    assert!(a.text().contains("not registered"), "{}", a.text());
    let org = json!({ "kbo": NEWCOMER, "name": "Newcomer (synthetic)", "kind": "company" });
    assert_eq!(h.ctl("admin", Method::POST, "/organisations", Some(org)).await.status, StatusCode::CREATED);
    let a = send(&client, Method::GET, "/organisations", &[], Bytes::new()).await.unwrap();
    assert_eq!(a.status, StatusCode::OK, "{}", a.text());
    assert!(a.text().contains(NEWCOMER));
}

/// The same through the control plane: the integrator submits the newcomer's request and the
/// gateway's own CA signs it, recorded with the organisation, in the change log and the
/// trail; the organisation asks for a test-environment certificate itself; the metrics show
/// the days left.
#[tokio::test]
async fn the_gateway_signs_a_registered_organisations_request() {
    let h = Harness::start().await.unwrap();
    let kbo = Kbo::parse(NEWCOMER).unwrap();
    let path = format!("/organisations/{NEWCOMER}/certificates");
    let (request, key) = certs::csr(&certs::ClientSpec::org("Newcomer (synthetic)", kbo)).unwrap();
    // Not registered yet: nothing to sign for.
    let a = h.ctl("admin", Method::POST, &path, Some(json!({ "csr": request }))).await;
    assert_eq!(a.code(), Some("RESOURCE_UNKNOWN"), "{}", a.text());
    let org = json!({ "kbo": NEWCOMER, "name": "Newcomer (synthetic)", "kind": "company" });
    assert_eq!(h.ctl("admin", Method::POST, "/organisations", Some(org)).await.status, StatusCode::CREATED);
    // Another organisation may not have it signed; a request for another number is refused.
    let a = h.ctl("bank-a", Method::POST, &path, Some(json!({ "csr": request }))).await;
    assert_eq!(a.code(), Some("ADMIN_ROLE_MISSING"), "{}", a.text());
    let (foreign, _) = certs::csr(&certs::ClientSpec::org("x", Kbo::parse("0403019261").unwrap())).unwrap();
    let a = h.ctl("admin", Method::POST, &path, Some(json!({ "csr": foreign }))).await;
    assert_eq!(a.code(), Some("CSR_INVALID"), "{}", a.text());
    assert!(a.text().contains("it names 0403019261"), "{}", a.text());
    let a = h.ctl("admin", Method::POST, &path, Some(json!({ "csr": "not a request" }))).await;
    assert_eq!(a.code(), Some("CSR_INVALID"), "{}", a.text());
    // Signed.
    let a = h.ctl("admin", Method::POST, &path, Some(json!({ "csr": request }))).await;
    assert_eq!(a.status, StatusCode::CREATED, "{}", a.text());
    let doc = a.json().unwrap();
    let pem = doc["item"]["certificate"].as_str().unwrap().to_owned();
    let fingerprint = doc["item"]["fingerprint"].as_str().unwrap().to_owned();
    assert!(doc["change"]["summary"].as_str().unwrap().starts_with("certificate "), "{doc}");
    let addr = h.demo.gateway.control_addr.unwrap();
    let ca = h.demo.pki.ca.cert_pem();
    let client =
        MtlsClient::new(addr, ca.as_bytes(), Some((pem.as_bytes(), key.as_bytes())), HttpVersion::Http1).unwrap();
    let a = send(&client, Method::GET, "/organisations", &[], Bytes::new()).await.unwrap();
    assert_eq!(a.status, StatusCode::OK, "{}", a.text());
    let org = a.json().unwrap()["items"].as_array().unwrap().iter().find(|o| o["kbo"] == NEWCOMER).unwrap().clone();
    assert_eq!(org["certificates"][0]["fingerprint"], fingerprint.as_str());
    // With that certificate the organisation asks for a test-environment one for itself.
    let mut spec = certs::ClientSpec::org("Newcomer test application", kbo);
    spec.environment = Some(certs::Environment::Integration);
    let (request, _) = certs::csr(&spec).unwrap();
    let body = Bytes::from(json!({ "csr": request }).to_string());
    let a = send(&client, Method::POST, &path, &[("content-type", "application/json")], body).await.unwrap();
    tests::openapi::check("POST", "/organisations/{kbo}/certificates", &a);
    assert_eq!(a.status, StatusCode::CREATED, "{}", a.text());
    // In the change log and the trail, by whom.
    let a = h.ctl("admin", Method::GET, "/changes?after=2", None).await;
    let changes = a.json().unwrap()["changes"].as_array().unwrap().clone();
    let signed: Vec<&Value> =
        changes.iter().filter(|c| c["operation"] == "POST /organisations/{kbo}/certificates").collect();
    assert_eq!(signed.len(), 2, "{changes:?}");
    assert_eq!(signed[1]["actor"], NEWCOMER);
    assert!(signed[1]["summary"].as_str().unwrap().contains("(INT)"));
    // The metrics count the days left (a year, from the gateway's clock).
    let (status, metrics) = tests::ops_get(&h, "/metrics").await;
    assert_eq!(status, 200);
    let line = metrics
        .lines()
        .find(|l| l.starts_with(&format!("passerelle_certificate_days_left{{organisation=\"{NEWCOMER}\"}}")))
        .unwrap_or_else(|| panic!("{metrics}"));
    assert!(line.ends_with(" 364") || line.ends_with(" 365"), "{line}");
}

/// A pinned organisation: only its registered certificates identify it. A certificate that
/// chains to the trusted CA and carries its enterprise number, but was never registered, is
/// refused on the control plane and the data plane; registering it opens it.
#[tokio::test]
async fn a_pinned_organisation_is_identified_by_its_registered_certificates_only() {
    let h = Harness::start().await.unwrap();
    let kbo = Kbo::parse(NEWCOMER).unwrap();
    let org = json!({ "kbo": NEWCOMER, "name": "Newcomer (synthetic)", "kind": "company", "pinned": true });
    assert_eq!(h.ctl("admin", Method::POST, "/organisations", Some(org)).await.status, StatusCode::CREATED);
    let path = format!("/organisations/{NEWCOMER}/certificates");
    let (request, key) = certs::csr(&certs::ClientSpec::org("Newcomer (synthetic)", kbo)).unwrap();
    let a = h.ctl("admin", Method::POST, &path, Some(json!({ "csr": request }))).await;
    assert_eq!(a.status, StatusCode::CREATED, "{}", a.text());
    let registered = a.json().unwrap()["item"]["certificate"].as_str().unwrap().to_owned();
    // Another certificate for the same number, signed by the same CA outside the gateway.
    let ca = &h.demo.pki.ca;
    let (other_request, other_key) = certs::csr(&certs::ClientSpec::org("Elsewhere", kbo)).unwrap();
    let signer = certs::CsrSigner::from_pem(&ca.cert_pem(), &ca.key_pem()).unwrap();
    let other = signer.sign(&other_request, kbo, 30, time::OffsetDateTime::now_utc()).unwrap().cert_pem;
    let addr = h.demo.gateway.control_addr.unwrap();
    let control = |cert: &str, key: &str| {
        MtlsClient::new(addr, ca.cert_pem().as_bytes(), Some((cert.as_bytes(), key.as_bytes())), HttpVersion::Http1)
            .unwrap()
    };
    let data = |cert: &str, key: &str| {
        MtlsClient::new(
            h.demo.gateway.data_addr,
            ca.cert_pem().as_bytes(),
            Some((cert.as_bytes(), key.as_bytes())),
            HttpVersion::Http1,
        )
        .unwrap()
    };
    let a = send(&control(&registered, &key), Method::GET, "/organisations", &[], Bytes::new()).await.unwrap();
    assert_eq!(a.status, StatusCode::OK, "{}", a.text());
    let a = send(&control(&other, &other_key), Method::GET, "/organisations", &[], Bytes::new()).await.unwrap();
    assert_eq!(a.code(), Some("CLIENT_CERT_INVALID"), "{}", a.text());
    let v = tests::vcode();
    let headers =
        [("x-legal-basis", tests::ASSOC_LEGAL_BASIS), ("x-purpose", tests::ASSOC_PURPOSE), ("x-subject", v.as_str())];
    let a = send(&data(&other, &other_key), Method::GET, "/associations/association", &headers, Bytes::new())
        .await
        .unwrap();
    assert_eq!(a.code(), Some("CLIENT_CERT_INVALID"), "{}", a.text());
    let a =
        send(&data(&registered, &key), Method::GET, "/associations/association", &headers, Bytes::new()).await.unwrap();
    assert_eq!(a.code(), Some("LEGAL_BASIS_NOT_APPLICABLE"), "identified, and covered by nothing: {}", a.text());
    // The organisation cannot widen its own list; the integrator registers the other
    // certificate (issued elsewhere): it identifies them too.
    let body = Bytes::from(json!({ "certificate": other }).to_string());
    let a = send(&control(&registered, &key), Method::POST, &path, &[("content-type", "application/json")], body)
        .await
        .unwrap();
    assert_eq!(a.code(), Some("ADMIN_ROLE_MISSING"), "{}", a.text());
    let a = h.ctl("admin", Method::POST, &path, Some(json!({ "certificate": other }))).await;
    assert_eq!(a.status, StatusCode::CREATED, "{}", a.text());
    let a = h.ctl("admin", Method::POST, &path, Some(json!({ "certificate": other }))).await;
    assert_eq!(a.code(), Some("ALREADY_EXISTS"));
    let a = send(&control(&other, &other_key), Method::GET, "/organisations", &[], Bytes::new()).await.unwrap();
    assert_eq!(a.status, StatusCode::OK, "{}", a.text());
    // A certificate of another organisation cannot be registered for it.
    let bank = h.demo.pki.client("bank-a").unwrap().cert_pem.clone();
    let a = h.ctl("admin", Method::POST, &path, Some(json!({ "certificate": bank }))).await;
    assert_eq!(a.code(), Some("CSR_INVALID"), "{}", a.text());
}
