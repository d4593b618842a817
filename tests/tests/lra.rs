//! The National Register person search for local registration officers: role-based access,
//! with the role's validity, over real TLS.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use bytes::Bytes;
use http::{Method, StatusCode};
use tests::{Harness, send};

async fn search(h: &Harness, who: &str, subject: &str, end_user: Option<&str>) -> gateway::client::Answer {
    let mut headers =
        vec![("x-legal-basis", "BOSA/LRA/2024"), ("x-purpose", "LRA_REGISTRATION"), ("x-subject", subject)];
    if let Some(u) = end_user {
        headers.push(("x-end-user", u));
    }
    send(&h.client(who), Method::GET, "/rn/person", &headers, Bytes::new()).await.unwrap()
}

fn persons() -> (String, String) {
    let all = adapters::rn::sandbox::Register::persons();
    let (mut a, mut b) = ([0u8; 11], [0u8; 11]);
    // The first ones have BIS numbers; take one of each.
    (all[adapters::rn::sandbox::BIS + 5].digits(&mut a).to_owned(), all[0].digits(&mut b).to_owned())
}

#[tokio::test]
async fn an_officer_with_a_valid_role_finds_persons_and_others_are_refused() {
    let h = Harness::start().await.unwrap();
    let (national, bis) = persons();
    for subject in [&national, &bis] {
        let a = search(&h, "municipality", subject, Some("lra-officer-1")).await;
        assert_eq!(a.status, StatusCode::OK, "{}", a.text());
        let doc = a.json().unwrap();
        assert_eq!(doc["niss"], subject.as_str());
        for f in ["names", "birthDate", "birthPlace", "address", "sex"] {
            assert!(doc.get(f).is_some(), "{f} is granted");
        }
    }
    // The role of officer 2 ended on 2025-12-31; nobody named; somebody without the role.
    for (user, why) in [(Some("lra-officer-2"), "expired"), (None, "X-End-User"), (Some("intern"), "does not hold")] {
        let a = search(&h, "municipality", &national, user).await;
        assert_eq!((a.status, a.code()), (StatusCode::FORBIDDEN, Some("END_USER_ROLE_MISSING")), "{user:?}");
        assert!(a.json().unwrap()["detail"].as_str().unwrap().contains(why), "{}", a.text());
    }
    // An end-user header naming a municipality's officer does not open it to an agency.
    let a = search(&h, tests::ASSOC_CALLER, &national, Some("lra-officer-1")).await;
    assert_eq!(a.code(), Some("LEGAL_BASIS_NOT_APPLICABLE"));
    // The officer is named in the audit record.
    let records = gateway::audit::verify::read_records(&h.demo.config.audit.dir).unwrap();
    assert!(records.iter().any(|r| r.record.end_user.as_deref() == Some("lra-officer-1") && r.record.status == 200));
}
