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

/// A bulk import killed (SIGKILL) after some batches were acknowledged: every acknowledged
/// batch is there, the batch being written is all there or not at all, and the import
/// resumed from the line after the last acknowledgement ends with each line's consent exactly
/// once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bulk_import_killed_mid_way_loses_no_acknowledged_batch() {
    use std::io::BufRead as _;
    let site = Site::new().await;
    let config = site.config.to_str().unwrap().to_owned();
    let (lines, batch) = (40_000u64, 1_000u64);
    let person = |j: u64| {
        let mut d = [0u8; 11];
        gateway::audit::generate::Plan::person(j).digits(&mut d).to_owned()
    };
    let mut text = String::new();
    for j in 1..=lines {
        let subject = match j {
            7 => "12345678901".to_owned(), // not a valid NISS: refused
            _ => person(j),
        };
        let purpose = if j == 9 { "NO_SUCH_PURPOSE" } else { gateway::demo::SIGEDIS_PURPOSE };
        text.push_str(
            &serde_json::json!({
                "subject": subject, "recipient": { "org": "0456123494" }, "service": "sigedis.pensions",
                "purpose": purpose, "valid_until": "2030-12-31", "evidence": format!("migration form {j}"),
            })
            .to_string(),
        );
        text.push('\n');
    }
    let file = site.path().join("consents.jsonl");
    std::fs::write(&file, &text).unwrap();
    let args = |from: u64| {
        vec![
            "consent".to_owned(),
            "import".into(),
            file.to_str().unwrap().into(),
            "--config".into(),
            config.clone(),
            "--actor".into(),
            "0316222275".into(),
            "--batch".into(),
            batch.to_string(),
            "--from-line".into(),
            from.to_string(),
        ]
    };
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_passerelle"))
        .args(args(1))
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut acks = Vec::new();
    for line in std::io::BufReader::new(child.stdout.take().unwrap()).lines() {
        let ack: serde_json::Value = serde_json::from_str(&line.unwrap()).unwrap();
        acks.push(ack["through_line"].as_u64().unwrap());
        if acks.len() == 5 {
            support::kill_9(&mut child);
            break;
        }
    }
    let _ = child.wait();
    assert_eq!(acks.len(), 5, "five batches acknowledged before the kill");
    let acknowledged = acks[4];
    let valid = |j: u64| j != 7 && j != 9;

    let present = |j: u64, r: &gateway::consent::Registry| r.of_subject(&person(j)).unwrap().len();
    {
        let store = gateway::store::SledStore::open(&site.path().join("store")).unwrap();
        let r = gateway::consent::Registry::open(gateway::consent::ConsentStore::open(&store).unwrap()).unwrap();
        for j in (1..=acknowledged).filter(|j| valid(*j)) {
            assert_eq!(present(j, &r), 1, "line {j} was acknowledged");
        }
        // After the last acknowledgement, whole batches or nothing.
        let after = (acknowledged + 1..=lines).filter(|j| present(*j, &r) == 1).count() as u64;
        assert_eq!(after % batch, 0, "{after} consents after the last acknowledged line");
        assert!((acknowledged + 1..=acknowledged + after).all(|j| present(j, &r) == 1), "a prefix of the rest");
        eprintln!("killed after line {acknowledged} acknowledged; {after} more written but not acknowledged");
    }

    let (code, out, err) = passerelle(&args(acknowledged + 1).iter().map(|s| &**s).collect::<Vec<_>>());
    assert_eq!(code, 0, "{err}");
    assert!(out.lines().count() as u64 >= (lines - acknowledged) / batch, "{out}");
    let store = gateway::store::SledStore::open(&site.path().join("store")).unwrap();
    let r = gateway::consent::Registry::open(gateway::consent::ConsentStore::open(&store).unwrap()).unwrap();
    for j in 1..=lines {
        assert_eq!(present(j, &r), usize::from(valid(j)), "line {j}");
    }
    assert_eq!(r.len() as u64, lines - 2);
    // The refusals name the line and the reason, and no personal identifier.
    drop((r, store));
    let (code, _, err) = passerelle(&args(1).iter().map(|s| &**s).collect::<Vec<_>>());
    assert_eq!(code, 1, "refused lines make the exit code 1");
    assert!(err.contains("line 7: refused") && err.contains("line 9: refused: no consent-based flow"), "{err}");
    assert!(!err.contains("12345678901"), "{err}");
    assert!(err.contains("0 consent(s) imported"), "a full rerun writes nothing twice: {err}");
}
