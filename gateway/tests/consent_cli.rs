//! `passerelle consent` in both modes: directly on a stopped gateway's store, and through a
//! running gateway's control plane.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use bytes::Bytes;
use http::Method;
use support::{Site, passerelle};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn consent_cli_on_the_store_and_through_the_control_plane() {
    let site = Site::new().await;
    let config = site.config.to_str().unwrap().to_owned();
    let mut d = [0u8; 11];
    let person = adapters::sigedis::sandbox::Register::persons()[3].digits(&mut d).to_owned();
    let give = |extra: &[&str]| {
        let mut a = vec![
            "consent",
            "give",
            "--config",
            &config,
            "--actor",
            "0316222275",
            "--subject",
            &person,
            "--recipient-org",
            "0456123494",
            "--service",
            "sigedis.pensions",
            "--purpose",
            gateway::demo::SIGEDIS_PURPOSE,
            "--valid-until",
            "2030-12-31",
            "--evidence",
            "paper-form-12",
        ];
        a.extend_from_slice(extra);
        passerelle(&a.iter().map(|s| &**s).collect::<Vec<_>>())
    };
    // Refusals say why and write nothing.
    let (code, _, err) = passerelle(&[
        "consent",
        "give",
        "--config",
        &config,
        "--actor",
        "0456123494",
        "--subject",
        &person,
        "--recipient-org",
        "0456123494",
        "--service",
        "sigedis.pensions",
        "--purpose",
        "X",
        "--valid-until",
        "2030-12-31",
        "--evidence",
        "e",
    ]);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("--actor must be a citizen access point"), "{err}");
    let (code, _, err) = give(&["--instance", "0207123407"]);
    assert_eq!(code, 2);
    assert!(err.contains("omit instance"), "{err}");

    // Direct on the store.
    let (code, out, err) = give(&[]);
    assert_eq!(code, 0, "{err}");
    let consent: serde_json::Value = serde_json::from_str(&out).unwrap();
    let id = consent["id"].as_str().unwrap().to_owned();
    let (code, out, _) = passerelle(&["consent", "list", "--config", &config, "--subject", &person]);
    assert_eq!(code, 0);
    assert!(out.contains(&id) && out.contains("\"given\""), "{out}");

    // The gateway sees it; then the CLI revokes it through the running control plane.
    let mut gw = site.start("cli.log").await;
    let bank = site.client("bank-a", false);
    let headers = [
        ("x-legal-basis", gateway::demo::SIGEDIS_LEGAL_BASIS),
        ("x-purpose", gateway::demo::SIGEDIS_PURPOSE),
        ("x-subject", person.as_str()),
    ];
    let call = || async {
        bank.send(gateway::client::request(Method::GET, "/sigedis/pensions", &headers, Bytes::new()).unwrap())
            .await
            .unwrap()
    };
    assert_eq!(call().await.status, 200);
    let pki = site.path().join("pki");
    let control = format!("127.0.0.1:{}", site.control_port);
    let (ca, cert, key) = (
        pki.join("ca.pem").to_str().unwrap().to_owned(),
        pki.join("clients/citizen-portal.pem").to_str().unwrap().to_owned(),
        pki.join("clients/citizen-portal.key").to_str().unwrap().to_owned(),
    );
    let (code, out, err) =
        passerelle(&["consent", "revoke", &id, "--control", &control, "--ca", &ca, "--cert", &cert, "--key", &key]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("revoked_at_ms"), "{out}");
    assert_eq!(call().await.code(), Some("CONSENT_REVOKED"));
    // Direct mode refuses while the gateway holds the store.
    let (code, _, err) = passerelle(&["consent", "list", "--config", &config, "--subject", &person]);
    assert_eq!(code, 2);
    assert!(err.contains("is the gateway running?"), "{err}");
    assert!(support::terminate(&mut gw).success());
}
