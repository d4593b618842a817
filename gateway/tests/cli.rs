//! The `passerelle` binary as a user runs it.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::process::Command;

fn passerelle() -> Command {
    Command::new(env!("CARGO_BIN_EXE_passerelle"))
}

/// The personal data the smoke run sends and receives: national numbers, IBANs, names,
/// e-mail addresses, from the sandboxes' own records.
fn personal_data_of_the_smoke_run() -> Vec<String> {
    let mut d = [0u8; 11];
    let mut out = vec![
        gateway::demo::sigedis_person().unwrap().digits(&mut d).to_owned(),
        gateway::demo::flemish_citizen().unwrap(),
        gateway::demo::rn_search_example().unwrap().0,
    ];
    let assoc = adapters::associations::sandbox::Register::generate();
    let doc = &assoc.get(gateway::demo::association().unwrap()).unwrap().doc;
    out.push(doc["bankAccount"].as_str().unwrap().to_owned());
    for r in doc["representatives"].as_array().unwrap() {
        out.extend([r["niss"].as_str().unwrap().to_owned(), r["name"].as_str().unwrap().to_owned()]);
    }
    let flemish = adapters::accounts::sandbox::Register::generate();
    let citizen = flemish.citizen(adapters::accounts::sandbox::Register::persons()[0]).unwrap();
    out.push(citizen.default_iban.unwrap().to_string());
    out.push(citizen.default_contact.as_ref().unwrap()["email"].as_str().unwrap().to_owned());
    let rn = adapters::rn::sandbox::Register::generate();
    let p = rn.person(adapters::rn::sandbox::Register::persons()[adapters::rn::sandbox::BIS]).unwrap();
    out.push(format!("{} {}", p["names"]["first"][0].as_str().unwrap(), p["names"]["last"].as_str().unwrap()));
    let div = adapters::div::sandbox::Register::generate();
    let v = &div.vehicles()[0];
    out.push(v.vin.to_string());
    let holder = v.doc.find("Vehicle").unwrap().find("Holder").unwrap();
    out.push(holder.find("Name").unwrap().text.clone());
    out.push(holder.find("Id").unwrap().children[0].text.clone());
    // The cadastre owner of the flow the smoke run opens through the control plane.
    let owner = adapters::synthetic::people(0xCAD, 1)[0];
    out.push(owner.digits(&mut d).to_owned());
    out
}

#[test]
fn demo_smoke_passes_and_logs_no_personal_data() {
    let dir = tempfile::tempdir().unwrap();
    // At debug level: the gateway's own events and its dependencies' (TLS, HTTP, store).
    let out =
        passerelle().args(["demo", "--smoke", "--dir"]).arg(dir.path()).env("RUST_LOG", "debug").output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "stdout:\n{stdout}\nstderr:\n{stderr}");
    assert!(stdout.contains(" 0 failed"), "{stdout}");
    assert!(!stdout.contains("FAIL"), "{stdout}");
    assert!(stderr.lines().count() > 100, "the log was written: {} lines", stderr.lines().count());
    let personal = personal_data_of_the_smoke_run();
    assert!(personal.len() >= 12);
    // They are the run's real data subjects: the audit trail, where they belong, has them.
    let records = gateway::audit::verify::read_records(&dir.path().join("audit")).unwrap();
    let recorded = |id: &str| {
        records
            .iter()
            .any(|r| r.record.subjects.iter().any(|s| matches!(s, gateway::audit::SubjectRef::Person(p) if p == id)))
    };
    assert!(recorded(&personal[0]) && recorded(&personal[2]), "the smoke run's persons are in the audit trail");
    for value in &personal {
        assert!(!stderr.contains(value.as_str()), "the log holds personal data ({} characters)", value.len());
        assert!(!stdout.contains(value.as_str()), "the report holds personal data ({} characters)", value.len());
    }
    // The demo leaves a real config, PKI and embedded store behind.
    assert!(dir.path().join("passerelle.toml").exists());
    assert!(dir.path().join("pki/ca.pem").exists());
    assert!(dir.path().join("store").is_dir());
}

/// A second demo beside a first: every port it asks for is checked before anything is
/// written, a taken one is named with the flag that changes it, and `PASSERELLE__…` overrides
/// apply to the demo as to `serve`.
#[test]
fn demo_names_a_taken_port_and_writes_nothing() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = taken.local_addr().unwrap().port().to_string();
    let dir = tempfile::tempdir().unwrap();
    let work = dir.path().join("second");
    for (flag, what) in [("--control-port", "control plane"), ("--ops-port", "operations"), ("--public-port", "public")]
    {
        let out = passerelle().args(["demo", "--port", "0", flag, &port, "--dir"]).arg(&work).output().unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{flag}: started on a taken port");
        assert!(
            stderr.contains(&format!("port {port}")) && stderr.contains(what) && stderr.contains(flag),
            "{flag}: {stderr}"
        );
        assert!(!work.exists(), "{flag}: something was written under --dir");
    }
    // The same through an environment override, as `serve` takes it.
    let out = passerelle()
        .args(["demo", "--port", "0", "--dir"])
        .arg(&work)
        .env("PASSERELLE__CONTROL__LISTEN", format!("127.0.0.1:{port}"))
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success() && stderr.contains("PASSERELLE__CONTROL__LISTEN"), "{stderr}");
    assert!(!work.exists());
}

#[test]
fn certs_init_writes_a_pki_with_private_keys_0600() {
    let dir = tempfile::tempdir().unwrap();
    let out = passerelle().args(["certs", "init", "--dir"]).arg(dir.path()).output().unwrap();
    assert!(out.status.success());
    for f in [
        "ca.pem",
        "ca.key",
        "server.pem",
        "server.key",
        "crl.pem",
        "clients/bank-a.pem",
        "clients/agency-a.key",
        "clients/admin.key",
    ] {
        assert!(dir.path().join(f).exists(), "{f}");
    }
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(dir.path().join("server.key")).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
    }
}

#[test]
fn serve_with_a_broken_config_exits_2_naming_the_problem() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("p.toml");
    std::fs::write(&cfg, "[tls]\ncert = \"a\"\nkey = \"b\"\nclient_ca = \"c\"\n[limits]\nmax_body = 3\n").unwrap();
    let out = passerelle().args(["serve", "--config"]).arg(&cfg).output().unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("p.toml") && err.contains("max_body"), "{err}");
    // A valid config whose certificate files are missing names the file; nothing is created.
    std::fs::write(
        &cfg,
        "[tls]\ncert = \"s.pem\"\nkey = \"s.key\"\nclient_ca = \"missing-ca.pem\"\n[store]\npath = \"s\"\n",
    )
    .unwrap();
    let out = passerelle().args(["serve", "--config"]).arg(&cfg).output().unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("client CA bundle") && err.contains("missing-ca.pem"), "{err}");
    assert!(!dir.path().join("s").exists(), "the store must not be created for a config that cannot start");
}

#[test]
fn policy_check_accepts_the_seed_bundles() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../policies/bundles");
    let mut files: Vec<_> = std::fs::read_dir(&dir).unwrap().map(|e| e.unwrap().path()).collect();
    files.sort();
    let out = passerelle().args(["policy", "check"]).args(&files).output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{stdout}{}", String::from_utf8_lossy(&out.stderr));
    assert!(stdout.contains("7 file(s) OK"), "{stdout}");
}

#[test]
fn policy_check_names_file_and_key_of_a_broken_bundle() {
    let dir = tempfile::tempdir().unwrap();
    let seed = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../policies/bundles");
    for f in ["organisations.toml", "associations.toml"] {
        let mut text = std::fs::read_to_string(seed.join(f)).unwrap();
        if f == "associations.toml" {
            text = text.replace("  sanctions = ", "  # sanctions = ");
        }
        std::fs::write(dir.path().join(f), text).unwrap();
    }
    let out = passerelle().args(["policy", "check"]).arg(dir.path()).output().unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("associations.toml: instruments[0] \"VL/PROT/2022/017\".protocol.sanctions: protocol lacks element (9) sanctions"),
        "{err}"
    );
}

/// A bundle registering a service whose catalogue names an element its XSD lacks: `policy
/// check` compiles the registration as the gateway would and names the service and the path.
#[test]
fn policy_check_compiles_registered_layouts() {
    let dir = tempfile::tempdir().unwrap();
    let seed = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../policies/bundles");
    for f in ["organisations.toml", "div.toml"] {
        std::fs::copy(seed.join(f), dir.path().join(f)).unwrap();
    }
    let mut body = adapters::div::sandbox::history_registration(adapters::div::sandbox::HISTORY_XSD);
    body["fields"] = serde_json::json!(["periods", "holders"]);
    let history: policies::model::Service = serde_json::from_value(body.clone()).unwrap();
    #[derive(serde::Serialize)]
    struct Bundle {
        services: Vec<policies::model::Service>,
    }
    let write = |s: policies::model::Service| {
        std::fs::write(dir.path().join("history.toml"), toml::to_string(&Bundle { services: vec![s] }).unwrap())
            .unwrap()
    };
    write(history);
    let out = passerelle().args(["policy", "check"]).arg(dir.path()).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    body["exposure"]["catalogue"][1]["path"] = "Entry/Since".into();
    write(serde_json::from_value(body).unwrap());
    let out = passerelle().args(["policy", "check"]).arg(dir.path()).output().unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("service div.history: catalogue path Entry/Since is no element below GetVehicleHistoryResponse"),
        "{err}"
    );
}

/// The replicas of a shared store each write their own chain (`replica-<name>/`): `audit verify`
/// on the directory above checks every chain on its own and names the one that fails; `audit
/// export` writes each chain after a line naming it.
#[tokio::test]
async fn audit_verify_and_export_handle_one_chain_per_replica() {
    use gateway::audit::{AuditTrail, Record, RecordKind, TrailConfig};
    let dir = tempfile::tempdir().unwrap();
    for (name, n) in [("a", 3u64), ("b", 5)] {
        let store =
            std::sync::Arc::new(gateway::store::SledStore::open(&dir.path().join(format!("store-{name}"))).unwrap());
        let cfg = TrailConfig {
            dir: dir.path().join("audit").join(format!("replica-{name}")),
            signing_key: dir.path().join("key"),
            segment_bytes: 1 << 20,
            checkpoint_every: 2,
            checkpoint_interval: std::time::Duration::from_secs(60),
            max_batch: 1,
        };
        let (trail, _) = AuditTrail::open(cfg, store).unwrap();
        for i in 0..n {
            let r = Record::control(RecordKind::PolicyChange, 1_000 + i, format!("{name}-{i}"), None, None, "test");
            trail.append(&r).await.unwrap();
        }
        trail.close();
    }
    let audit = dir.path().join("audit");
    // Without a pinned key nothing is verified: a key named inside the trail proves nothing.
    let out = passerelle().args(["audit", "verify"]).arg(&audit).output().unwrap();
    assert_ne!(out.status.code(), Some(0));
    assert!(String::from_utf8_lossy(&out.stderr).contains("pinned public key"), "{out:?}");
    let key = dir.path().join("key.pub");
    let out = passerelle()
        .args(["audit", "verify", "--require-sealed"])
        .arg(&audit)
        .arg("--public-key")
        .arg(&key)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "every record sealed by the close: {text}");
    assert!(text.contains("audit trail (replica a) verifies: 1 segment(s), records 1..3"), "{text}");
    assert!(text.contains("audit trail (replica b) verifies: 1 segment(s), records 1..5"), "{text}");

    let out = passerelle().args(["audit", "export"]).arg(&audit).output().unwrap();
    assert!(out.status.success());
    let lines: Vec<serde_json::Value> =
        String::from_utf8_lossy(&out.stdout).lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    let chains: Vec<_> = lines.iter().filter(|l| l["type"] == "chain").map(|l| l["replica"].clone()).collect();
    assert_eq!(chains, ["a", "b"]);
    assert_eq!(lines.iter().filter(|l| l["type"] == "record").count(), 8);
    let file = dir.path().join("export.jsonl");
    std::fs::write(&file, &out.stdout).unwrap();
    let out = passerelle().args(["audit", "verify-export"]).arg(&file).arg("--public-key").arg(&key).output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{text}");
    assert!(text.contains("export (replica a) verifies: records 1..3"), "{text}");
    assert!(text.contains("export (replica b) verifies: records 1..5"), "{text}");
    // The same export and each replica's chain, as a verifier written from the document reads them.
    let (code, said) = testkit::document_verifier(&["verify-export".as_ref(), file.as_os_str(), key.as_os_str()]);
    assert_eq!((code, said.trim()), (Some(0), "export verifies: 2 chain(s), 8 record(s)"));
    for replica in ["replica-a", "replica-b"] {
        let chain = audit.join(replica);
        let (code, said) = testkit::document_verifier_on_trail(&chain, &key);
        assert_eq!(code, Some(0), "{replica}: {said}");
    }

    // One byte changed in replica b's chain: b fails, a still verifies, exit 1.
    let seg = dir.path().join("audit/replica-b/segment-00000000000000000001.log");
    let seg = if seg.exists() {
        seg
    } else {
        std::fs::read_dir(dir.path().join("audit/replica-b"))
            .unwrap()
            .map(|e| e.unwrap().path())
            .find(|p| p.file_name().unwrap().to_str().unwrap().starts_with("segment-"))
            .unwrap()
    };
    let mut bytes = std::fs::read(&seg).unwrap();
    let at = bytes.len() - 20;
    bytes[at] ^= 0x01;
    std::fs::write(&seg, bytes).unwrap();
    let out = passerelle()
        .args(["audit", "verify"])
        .arg(&audit)
        .arg("--public-key")
        .arg(dir.path().join("key.pub"))
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(1), "{text}");
    assert!(text.contains("(replica a) verifies") && text.contains("(replica b) does NOT verify"), "{text}");
}

/// A new organisation's certificate without openssl: `certs csr` writes a key and a request,
/// `certs sign` signs it with the dev PKI's CA once it names the enterprise number given
/// (`tests/tests/onboarding.rs` shows a gateway accepting such a certificate).
#[test]
fn an_organisation_certificate_from_a_request() {
    let dir = tempfile::tempdir().unwrap();
    let pki = dir.path().join("pki");
    assert!(passerelle().args(["certs", "init", "--dir"]).arg(&pki).status().unwrap().success());
    let out = passerelle()
        .args(["certs", "csr", "--enterprise-number", "0412345614", "--name", "Fleet lessor", "--environment", "INT"])
        .args(["--file", "fleet", "--out"])
        .arg(dir.path())
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let key = dir.path().join("fleet.key.pem");
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        assert_eq!(std::fs::metadata(&key).unwrap().permissions().mode() & 0o777, 0o600);
    }
    let sign = |kbo: &str| {
        passerelle()
            .args(["certs", "sign", "--ca-cert"])
            .arg(pki.join("ca.pem"))
            .arg("--ca-key")
            .arg(pki.join("ca.key"))
            .arg("--csr")
            .arg(dir.path().join("fleet.csr.pem"))
            .args(["--enterprise-number", kbo])
            .output()
            .unwrap()
    };
    // Another organisation's number: refused, saying which one the request carries.
    let refused = sign("0403019261");
    assert_eq!(refused.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&refused.stderr).contains("it names 0412345614"));
    let signed = sign("0412345614");
    assert!(signed.status.success(), "{}", String::from_utf8_lossy(&signed.stderr));
    let pem = String::from_utf8(signed.stdout).unwrap();
    use rustls_pki_types::pem::PemObject;
    let der = rustls_pki_types::CertificateDer::from_pem_slice(pem.as_bytes()).unwrap();
    let id = certs::OrgIdentity::from_der(&der).unwrap();
    assert_eq!(id.kbo.to_string().replace('.', ""), "0412345614");
    assert_eq!(id.environment, Some(certs::Environment::Integration));
}

/// `passerelle audit generate` writes a trail the gateway serves as its own: it verifies
/// against the key it was sealed with, and the citizen report and an auditor's query for one
/// day find exactly the records the plan puts there (the plan is a pure function of the
/// command's arguments, so the test counts them without reading the trail).
#[tokio::test]
async fn a_generated_trail_verifies_and_answers_exactly_what_the_plan_holds() {
    use gateway::audit::generate::Plan;
    use http::{Method, Request};
    let dir = tempfile::tempdir().unwrap();
    let now_s = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs();
    let until = time::OffsetDateTime::from_unix_timestamp(now_s as i64)
        .unwrap()
        .format(&time::format_description::well_known::Rfc3339)
        .unwrap();
    let plan = Plan { records: 30_000, years: 1, subjects: 400, organisations: 7, end_ms: now_s * 1000 };
    let out = passerelle()
        .args(["audit", "generate", &dir.path().display().to_string(), "--records", "30000", "--years", "1"])
        .args(["--until", &until, "--subjects", "400", "--organisations", "7", "--in-flight", "256"])
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(out.status.success(), "{stdout}{}", String::from_utf8_lossy(&out.stderr));
    assert!(stdout.starts_with("30000 records in "), "{stdout}");
    // A second generation into the same directory is refused, touching nothing.
    let again =
        passerelle().args(["audit", "generate", &dir.path().display().to_string(), "--records", "5"]).output().unwrap();
    assert!(!again.status.success() && String::from_utf8_lossy(&again.stderr).contains("already holds a trail"));
    let pubkey = dir.path().join("pki").join("audit-signing.pub");
    let out = passerelle()
        .args(["audit", "verify", &dir.path().join("audit").display().to_string(), "--public-key"])
        .arg(&pubkey)
        .arg("--require-sealed")
        .output()
        .unwrap();
    let verdict = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(out.status.success() && verdict.contains("records 1..30000 (30000 records)"), "{verdict}");

    // The demo gateway on that directory answers from it.
    let demo = gateway::demo::Demo::start(gateway::demo::DemoOptions::new(dir.path(), 0)).await.unwrap();
    let person = plan.subject_index(17);
    let expected = (0..plan.records).filter(|&i| plan.subject_index(i) == person).count();
    let mut b = [0u8; 11];
    let niss = Plan::person(person).digits(&mut b).to_owned();
    let req = Request::builder().method(Method::GET).uri("/audit/report").header("x-subject", niss);
    let a = demo.control_client("citizen-portal").unwrap().send(req.body(Default::default()).unwrap()).await.unwrap();
    assert_eq!(a.status, 200, "{}", a.text());
    assert_eq!(a.json().unwrap()["count"].as_u64(), Some(expected as u64), "{}", a.text());
    assert!(expected >= 50, "the person has records: {expected}");

    let org = plan.caller_index(15_000);
    let day = plan.time_ms(15_000) / 86_400_000 * 86_400_000;
    let in_day = |i: u64| (day..day + 86_400_000).contains(&plan.time_ms(i));
    let expected = (0..plan.records).filter(|&i| plan.caller_index(i) == org && in_day(i)).count();
    let rfc = |ms: u64| {
        time::OffsetDateTime::from_unix_timestamp_nanos(i128::from(ms) * 1_000_000)
            .unwrap()
            .format(&time::format_description::well_known::Rfc3339)
            .unwrap()
    };
    let mut k = [0u8; 10];
    let body = serde_json::json!({
        "caller": Plan::organisation(org).digits(&mut k), "from": rfc(day), "to": rfc(day + 86_399_999),
        "justification": { "case_reference": "T/1", "legal_ground": "test", "requested_by": "the test" },
    });
    let req = Request::builder()
        .method(Method::POST)
        .uri("/audit/queries")
        .header("content-type", "application/json")
        .body(body.to_string().into())
        .unwrap();
    let a = demo.control_client("admin").unwrap().send(req).await.unwrap();
    assert_eq!(a.status, 200, "{}", a.text());
    let doc = a.json().unwrap();
    assert_eq!(doc["count"].as_u64(), Some(expected as u64), "{doc}");
    assert!(expected >= 5, "the organisation called that day: {expected}");
    let ids: Vec<u64> = doc["records"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["request_id"].as_str().unwrap().trim_start_matches("gen-").parse().unwrap())
        .collect();
    assert!(ids.iter().all(|&i| plan.caller_index(i) == org && in_day(i)), "{ids:?}");
    demo.gateway.shutdown().await;
}
