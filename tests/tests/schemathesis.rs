//! Schemathesis, with its default checks, against the control plane of a running gateway: the
//! OpenAPI document is exactly as strict as the server (what it allows is accepted, what it
//! forbids is refused), every answer follows it, and nothing fails with a 5xx.
//!
//! The formats JSON Schema cannot express (identifiers with check digits, dates the server
//! accepts today) have generators in `tests/schemathesis/hooks.py`; the statuses a schema-valid
//! request may still meet (references to what the policy holds, its rules) are in
//! `tests/schemathesis/schemathesis.toml`, each with its reason. `scripts/test` installs the
//! pinned Schemathesis (`tests/requirements.txt`).

#![allow(clippy::unwrap_used, clippy::expect_used)]

use tests::Harness;

/// Examples per operation and phase: bounded, and with a fixed seed, so a run is repeatable;
/// `PASSERELLE_SCHEMATHESIS_EXAMPLES` runs more.
const EXAMPLES: &str = "25";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn schemathesis_finds_the_control_plane_as_documented() {
    let h = Harness::start().await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let admin = h.demo.pki.client("admin").unwrap();
    let (ca, cert, key) = (dir.path().join("ca.pem"), dir.path().join("admin.pem"), dir.path().join("admin.key"));
    std::fs::write(&ca, h.demo.pki.ca.cert_pem()).unwrap();
    std::fs::write(&cert, &admin.cert_pem).unwrap();
    std::fs::write(&key, &admin.key_pem).unwrap();
    let here = concat!(env!("CARGO_MANIFEST_DIR"), "/schemathesis");
    let url = format!("https://localhost:{}/openapi.json", h.demo.gateway.control_addr.unwrap().port());
    let examples = std::env::var("PASSERELLE_SCHEMATHESIS_EXAMPLES").unwrap_or_else(|_| EXAMPLES.to_owned());
    let out = tokio::task::spawn_blocking(move || {
        std::process::Command::new("schemathesis")
            .arg("--config-file")
            .arg(format!("{here}/schemathesis.toml"))
            .args(["run", &url, "--max-examples", &examples, "--seed", "20261203", "--no-color"])
            .arg("--tls-verify")
            .arg(&ca)
            .arg("--request-cert")
            .arg(&cert)
            .arg("--request-cert-key")
            .arg(&key)
            .env("SCHEMATHESIS_HOOKS", "hooks")
            .env("PYTHONPATH", here)
            .current_dir(dir.path())
            .output()
            .expect("schemathesis (scripts/test installs it in target/python-venv)")
    })
    .await
    .unwrap();
    let said = String::from_utf8_lossy(&out.stdout);
    let tail: String =
        said.lines().rev().take(120).collect::<Vec<_>>().into_iter().rev().collect::<Vec<_>>().join("\n");
    assert!(out.status.success(), "schemathesis found problems:\n{tail}\n{}", String::from_utf8_lossy(&out.stderr));
    // Not a run that tested nothing: every operation it selected, and thousands of cases.
    let field = |name: &str| said.lines().find_map(|l| l.trim().strip_prefix(name).map(|v| v.trim().to_owned()));
    let (selected, tested) = (field("Selected:").unwrap_or_default(), field("Tested:").unwrap_or_default());
    let (chosen, all) = selected.split_once('/').unwrap_or_default();
    assert!(chosen == all && tested == chosen && chosen.parse::<usize>().unwrap_or(0) >= 30, "{tail}");
    let generated = said
        .lines()
        .find_map(|l| l.trim().split_once(" generated, ").and_then(|(n, _)| n.trim().parse::<u64>().ok()))
        .unwrap_or(0);
    assert!(generated > 1_000, "only {generated} cases generated:\n{tail}");
}
