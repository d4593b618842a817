//! The authorize step in the running gateway: refusals carry the decision's code, and a call
//! without a covering instrument never reaches its source.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::atomic::Ordering;

use http::StatusCode;
use tests::{AGENCY_A_INT, ASSOC_CALLER, Harness, association, counting_upstream, sigedis, vcode};

#[tokio::test]
async fn refused_calls_never_reach_the_source() {
    let (upstream, hits) = counting_upstream(tests::association_doc("counted")).await.unwrap();
    let url = upstream.url();
    let h = Harness::with_overrides(&[("PASSERELLE__SOURCES__ASSOCIATIONS__UPSTREAM", url.as_str())]).await.unwrap();
    let agency = h.client(ASSOC_CALLER);
    let v = vcode();
    let call = |client: gateway::client::MtlsClient, basis: &'static str, purpose: &'static str| {
        let v = v.clone();
        async move {
            let h = [("x-legal-basis", basis), ("x-purpose", purpose), ("x-subject", v.as_str())];
            tests::send(&client, http::Method::GET, "/associations/association", &h, bytes::Bytes::new()).await.unwrap()
        }
    };
    let (basis, purpose) = (tests::ASSOC_LEGAL_BASIS, tests::ASSOC_PURPOSE);
    let refused: Vec<(tests::Answer, &str)> = vec![
        (call(agency.clone(), basis, "MARKETING").await, "PURPOSE_NOT_ALLOWED"),
        (call(agency.clone(), "VL/PROT/1999/001", purpose).await, "NO_LEGAL_BASIS"),
        (call(h.client("agency-b"), basis, purpose).await, "LEGAL_BASIS_NOT_APPLICABLE"),
        // Naming another organisation's instrument.
        (call(agency.clone(), "DIV/CONV/2023/0042", "INSURANCE_CLAIM").await, "LEGAL_BASIS_NOT_APPLICABLE"),
        // An organisation that no instrument names for this service.
        (call(h.client("admin"), basis, purpose).await, "LEGAL_BASIS_NOT_APPLICABLE"),
    ];
    for (a, code) in &refused {
        assert_eq!(a.code(), Some(*code), "{}", a.text());
        assert_eq!(a.status, StatusCode::FORBIDDEN);
        assert_eq!(a.headers["content-type"], "application/problem+json");
    }
    assert_eq!(hits.load(Ordering::SeqCst), 0, "a refused call reached the source");
    // The permitted call does.
    let a = association(&agency, &v, &[]).await.unwrap();
    assert_eq!(a.status, StatusCode::OK);
    assert_eq!(hits.load(Ordering::SeqCst), 1);
    // Header duplicates cannot smuggle a second legal basis in.
    let a = association(&agency, &v, &[("x-legal-basis", "DIV/CONV/2023/0042")]).await.unwrap();
    assert_eq!(a.code(), Some("ENVELOPE_INVALID"));
    assert_eq!(hits.load(Ordering::SeqCst), 1);
}

#[tokio::test]
async fn consent_based_flow_is_refused_without_consent_on_file() {
    let h = Harness::start().await.unwrap();
    let a = sigedis(&h.client(tests::SIGEDIS_CALLER), &tests::person(), &[]).await.unwrap();
    assert_eq!(a.code(), Some("CONSENT_MISSING"), "{}", a.text());
    // A company outside the sector is refused before consent is even considered.
    let a = sigedis(&h.client("company"), &tests::person(), &[]).await.unwrap();
    assert_eq!(a.code(), Some("LEGAL_BASIS_NOT_APPLICABLE"));
}

#[tokio::test]
async fn test_environment_certificates_reach_only_the_test_side() {
    let (prod, prod_hits) = counting_upstream(tests::association_doc("production side")).await.unwrap();
    let (test, test_hits) = counting_upstream(tests::association_doc("test side")).await.unwrap();
    let (p, t) = (prod.url(), test.url());
    let h = Harness::with_overrides(&[
        ("PASSERELLE__SOURCES__ASSOCIATIONS__UPSTREAM", p.as_str()),
        ("PASSERELLE__SOURCES__ASSOCIATIONS__TEST_UPSTREAM", t.as_str()),
    ])
    .await
    .unwrap();
    let a = association(&h.client(AGENCY_A_INT), &vcode(), &[]).await.unwrap();
    assert_eq!(a.json().unwrap()["name"], "test side");
    let a = association(&h.client(ASSOC_CALLER), &vcode(), &[]).await.unwrap();
    assert_eq!(a.json().unwrap()["name"], "production side");
    assert_eq!((prod_hits.load(Ordering::SeqCst), test_hits.load(Ordering::SeqCst)), (1, 1));
}

fn three_a_minute(name: &str, text: String) -> String {
    if name == "associations.toml" {
        text.replace("rate = { max = 2000, per = \"day\" }", "rate = { max = 3, per = \"minute\" }")
    } else {
        text
    }
}

#[tokio::test]
async fn the_grant_periodicity_is_enforced_per_organisation() {
    let h = Harness::with(&[], Some(three_a_minute)).await.unwrap();
    let agency = h.client(ASSOC_CALLER);
    for i in 0..3 {
        assert_eq!(association(&agency, &vcode(), &[]).await.unwrap().status, StatusCode::OK, "call {i}");
    }
    let a = association(&agency, &vcode(), &[]).await.unwrap();
    assert_eq!((a.status, a.code()), (StatusCode::TOO_MANY_REQUESTS, Some("RATE_EXCEEDED")), "{}", a.text());
    assert!(a.json().unwrap()["detail"].as_str().unwrap().contains("3 calls per 60 s"));
    // A refused call spends no token of anyone: agency B is not covered at all.
    let a = association(&h.client("agency-b"), &vcode(), &[]).await.unwrap();
    assert_eq!(a.code(), Some("LEGAL_BASIS_NOT_APPLICABLE"));
}
