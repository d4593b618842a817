//! A new organisation onboarded with a certificate signed from its own request (PKCS#10): the
//! key never leaves the organisation, the certificate carries exactly its registered
//! enterprise number, and the gateway accepts it over mTLS — unregistered, the control plane
//! answers that the organisation is not registered; registered by the integrator, it reads.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use bytes::Bytes;
use gateway::client::{HttpVersion, MtlsClient};
use http::{Method, StatusCode};
use policies::ids::Kbo;
use serde_json::json;
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
