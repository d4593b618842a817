//! Crash test for consent changes: a change acknowledged by the control plane survives a
//! SIGKILL of the gateway right after the acknowledgement. Twenty rounds of: give consent →
//! kill -9 → restart → the call passes; revoke → kill -9 → restart → the call is refused with
//! CONSENT_REVOKED.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use bytes::Bytes;
use http::Method;
use support::Site;

const ROUNDS: usize = 20;

async fn call(
    client: &gateway::client::MtlsClient,
    method: Method,
    path: &str,
    h: &[(&str, &str)],
    body: Bytes,
) -> gateway::client::Answer {
    let req = gateway::client::request(method, path, h, body).unwrap();
    tokio::time::timeout(std::time::Duration::from_secs(10), client.send(req)).await.unwrap().unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acknowledged_consent_changes_survive_kill_9() {
    let site = Site::new().await;
    let bank = site.client("bank-a", false);
    let portal = site.client("citizen-portal", true);
    let persons = adapters::sigedis::sandbox::Register::persons();
    let mut survived = (0, 0);
    for round in 0..ROUNDS {
        let mut d = [0u8; 11];
        let person = persons[round + 10].digits(&mut d).to_owned();
        let pension = |p: &str| {
            vec![
                ("x-legal-basis", gateway::demo::SIGEDIS_LEGAL_BASIS.to_owned()),
                ("x-purpose", gateway::demo::SIGEDIS_PURPOSE.to_owned()),
                ("x-subject", p.to_owned()),
            ]
        };
        let headers = pension(&person);
        let h: Vec<(&str, &str)> = headers.iter().map(|(k, v)| (*k, v.as_str())).collect();

        let mut gw = site.start(&format!("give-{round}.log")).await;
        let body = serde_json::json!({
            "subject": person, "recipient": {"org": "0456123494"}, "service": "sigedis.pensions",
            "purpose": gateway::demo::SIGEDIS_PURPOSE, "valid_until": "2030-12-31", "evidence": format!("round-{round}"),
        });
        let a = call(&portal, Method::POST, "/consents", &[], Bytes::from(body.to_string())).await;
        assert_eq!(a.status, 201, "round {round}: {}", a.text());
        let id = a.json().unwrap()["id"].as_str().unwrap().to_owned();
        support::kill_9(&mut gw); // right after the acknowledgement

        let mut gw = site.start(&format!("after-give-{round}.log")).await;
        let a = call(&bank, Method::GET, "/sigedis/pensions", &h, Bytes::new()).await;
        assert_eq!(a.status, 200, "round {round}: the given consent was lost: {}", a.text());
        survived.0 += 1;
        let a = call(&portal, Method::POST, &format!("/consents/{id}/revoke"), &[], Bytes::new()).await;
        assert_eq!(a.status, 200, "round {round}: {}", a.text());
        support::kill_9(&mut gw);

        let mut gw = site.start(&format!("after-revoke-{round}.log")).await;
        let a = call(&bank, Method::GET, "/sigedis/pensions", &h, Bytes::new()).await;
        assert_eq!(a.code(), Some("CONSENT_REVOKED"), "round {round}: the revocation was lost: {}", a.text());
        survived.1 += 1;
        support::kill_9(&mut gw);
    }
    // Personal identifiers go to the audit trail only: none of the NISS this test used appears
    // in anything the gateway logged (at info, every request and refusal).
    let mut logged = String::new();
    for e in std::fs::read_dir(site.path()).unwrap() {
        let p = e.unwrap().path();
        if p.extension().is_some_and(|x| x == "log") {
            logged.push_str(&std::fs::read_to_string(&p).unwrap());
        }
    }
    assert!(logged.contains("refused"), "the logs hold the refusals (the check below is not vacuous)");
    for p in &persons[10..10 + ROUNDS] {
        let mut d = [0u8; 11];
        let digits = p.digits(&mut d);
        assert!(!logged.contains(digits) && !logged.contains(&p.to_string()), "a NISS reached the logs");
    }
    println!(
        "consent crash test: {ROUNDS} rounds, {} given consents and {} revocations survived kill -9, 0 lost",
        survived.0, survived.1
    );
}
