//! The `passerelle` binary as a user runs it.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::process::Command;

fn passerelle() -> Command {
    Command::new(env!("CARGO_BIN_EXE_passerelle"))
}

#[test]
fn demo_smoke_passes() {
    let dir = tempfile::tempdir().unwrap();
    let out = passerelle().args(["demo", "--smoke", "--dir"]).arg(dir.path()).output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "stdout:\n{stdout}\nstderr:\n{}", String::from_utf8_lossy(&out.stderr));
    assert!(stdout.contains(" 0 failed"), "{stdout}");
    assert!(!stdout.contains("FAIL"), "{stdout}");
    // The demo leaves a real config, PKI and embedded store behind.
    assert!(dir.path().join("passerelle.toml").exists());
    assert!(dir.path().join("pki/ca.pem").exists());
    assert!(dir.path().join("store").is_dir());
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
