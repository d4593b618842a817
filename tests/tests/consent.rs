//! Consent over real TLS: a consent-based flow is refused without consent, passes once the
//! citizen gave it through the citizen access point, is refused again right after revocation,
//! and refused when the consent has expired. Bad input is refused and writes nothing.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use bytes::Bytes;
use gateway::audit::verify::read_records;
use http::{Method, StatusCode};
use tests::{Harness, SIGEDIS_CALLER, SIGEDIS_PURPOSE, person, send, sigedis};

fn give(subject: &str, recipient: serde_json::Value, valid_until: &str) -> Bytes {
    Bytes::from(
        serde_json::json!({
            "subject": subject,
            "recipient": recipient,
            "service": "sigedis.pensions",
            "purpose": SIGEDIS_PURPOSE,
            "valid_until": valid_until,
            "evidence": "portal-session-4711",
        })
        .to_string(),
    )
}

const BANK_A: &str = "0456123494";

#[tokio::test]
async fn consent_given_revoked_and_expired_over_real_tls() {
    let h = Harness::start().await.unwrap();
    let bank = h.client(SIGEDIS_CALLER);
    let portal = h.control_client("citizen-portal");
    let p = person();

    let a = sigedis(&bank, &p, &[]).await.unwrap();
    assert_eq!(a.code(), Some("CONSENT_MISSING"));

    // The citizen gives consent through the citizen access point.
    let a = send(&portal, Method::POST, "/consents", &[], give(&p, serde_json::json!({"org": BANK_A}), "2030-12-31"))
        .await
        .unwrap();
    assert_eq!(a.status, StatusCode::CREATED, "{}", a.text());
    let consent = a.json().unwrap();
    let id = consent["id"].as_str().unwrap().to_owned();
    assert_eq!(consent["given_via"]["citizen-access-point"], "0316222275");

    let a = sigedis(&bank, &p, &[("x-request-id", "with-consent")]).await.unwrap();
    assert_eq!(a.status, StatusCode::OK, "{}", a.text());
    assert!(!a.json().unwrap()["plans"].as_array().unwrap().is_empty());
    // Another bank is not covered by a consent given to bank A.
    let a = sigedis(&h.client("bank-b"), &p, &[]).await.unwrap();
    assert_eq!(a.code(), Some("CONSENT_MISSING"));
    // Nor is another person.
    let a = sigedis(&bank, &tests::other_person(), &[]).await.unwrap();
    assert_eq!(a.code(), Some("CONSENT_MISSING"));

    // Revocation: the very next call is refused.
    let a = send(&portal, Method::POST, &format!("/consents/{id}/revoke"), &[], Bytes::new()).await.unwrap();
    assert_eq!(a.status, StatusCode::OK, "{}", a.text());
    assert!(a.json().unwrap()["revoked_at_ms"].is_u64());
    let a = sigedis(&bank, &p, &[]).await.unwrap();
    assert_eq!(a.code(), Some("CONSENT_REVOKED"));
    let a = send(&portal, Method::POST, &format!("/consents/{id}/revoke"), &[], Bytes::new()).await.unwrap();
    assert_eq!(a.code(), Some("REQUEST_INVALID"), "revoking twice is refused");

    // A consent that expires two seconds from now.
    let soon = time::OffsetDateTime::now_utc() + time::Duration::seconds(2);
    let soon = soon.format(&time::format_description::well_known::Rfc3339).unwrap();
    let other = tests::other_person();
    let a = send(&portal, Method::POST, "/consents", &[], give(&other, serde_json::json!({"org": BANK_A}), &soon))
        .await
        .unwrap();
    assert_eq!(a.status, StatusCode::CREATED, "{}", a.text());
    assert_eq!(sigedis(&bank, &other, &[]).await.unwrap().status, StatusCode::OK);
    tokio::time::sleep(Duration::from_millis(2_500)).await;
    assert_eq!(sigedis(&bank, &other, &[]).await.unwrap().code(), Some("CONSENT_EXPIRED"));

    // The subject's consents, with their history.
    let a = send(&portal, Method::GET, "/consents", &[("x-subject", p.as_str())], Bytes::new()).await.unwrap();
    let doc = a.json().unwrap();
    assert_eq!(doc["count"], 1);
    let events: Vec<&str> =
        doc["consents"][0]["history"].as_array().unwrap().iter().map(|e| e["event"].as_str().unwrap()).collect();
    assert_eq!(events, ["given", "revoked"]);

    // The audit record of the permitted call names the consent.
    let records = read_records(&h.demo.config.audit.dir).unwrap();
    let r = records.iter().find(|r| r.record.request_id == "with-consent").unwrap();
    assert_eq!(r.record.consent_id.as_deref(), Some(id.as_str()));

    // A clean stop leaves the index's image; the next start reads it, revocation included.
    let (cfg, _dir) = h.stop().await;
    let gw = gateway::server::start(&cfg).await.unwrap();
    assert!(gw.consent.from_image(), "the clean stop's image was read");
    let check = |who: &str| {
        gw.consent.check(
            policies::ids::Niss::parse(who).unwrap(),
            policies::ids::Kbo::parse(BANK_A).unwrap(),
            None,
            "sigedis.pensions",
            "SUPPLEMENTARY_PENSION_INFO",
            gw.policy.now_ms(),
            None,
        )
    };
    assert_eq!(check(&p), Err(gateway::consent::Denial::Revoked));
    assert_eq!(check(&other), Err(gateway::consent::Denial::Expired));
    gw.shutdown().await;
}

#[tokio::test]
async fn bad_consent_input_is_refused_and_writes_nothing() {
    let h = Harness::start().await.unwrap();
    let portal = h.control_client("citizen-portal");
    let p = person();
    let org = serde_json::json!({"org": BANK_A});
    let cases: Vec<(Bytes, &str, &str)> = vec![
        (give("85073003329", org.clone(), "2030-12-31"), "SUBJECT_INVALID", "check digits"),
        (give(&p, serde_json::json!({"org": "0403019261"}), "2030-12-31"), "REQUEST_INVALID", "no organisation"),
        (give(&p, org.clone(), "2020-01-01"), "REQUEST_INVALID", "in the past"),
        (
            Bytes::from(
                serde_json::json!({"subject": p, "recipient": org, "service": "associations.association",
                    "purpose": "SUBSIDY_HANDLING", "valid_until": "2030-01-01", "evidence": "x"})
                .to_string(),
            ),
            "REQUEST_INVALID",
            "no consent-based flow",
        ),
        (Bytes::from_static(b"{not json"), "REQUEST_INVALID", "not valid JSON"),
    ];
    for (body, code, needle) in cases {
        let a = send(&portal, Method::POST, "/consents", &[], body).await.unwrap();
        assert_eq!(a.code(), Some(code), "{}", a.text());
        assert!(a.json().unwrap()["detail"].as_str().unwrap().contains(needle), "{}", a.text());
    }
    // A recipient's certificate cannot record consents.
    let a = send(&h.control_client(SIGEDIS_CALLER), Method::POST, "/consents", &[], give(&p, org, "2030-12-31"))
        .await
        .unwrap();
    assert_eq!(a.code(), Some("ADMIN_ROLE_MISSING"));
    // Nothing was written.
    let a = send(&portal, Method::GET, "/consents", &[("x-subject", p.as_str())], Bytes::new()).await.unwrap();
    assert_eq!(a.json().unwrap()["count"], 0);
    assert_eq!(sigedis(&h.client(SIGEDIS_CALLER), &p, &[]).await.unwrap().code(), Some("CONSENT_MISSING"));
}
