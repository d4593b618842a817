//! `passerelle policy export|import` on a stopped gateway's store, and how the configured
//! bundles and the store meet: the store is the source of truth at run time, and the bundles
//! are imported again only when they changed.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use bytes::Bytes;
use gateway::demo::{ASSOC_CALLER, ASSOC_LEGAL_BASIS, ASSOC_PURPOSE};
use http::Method;
use policies::model::Status;
use support::{Site, passerelle};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn export_edit_import_and_the_bundles_on_disk() {
    let site = Site::new().await;
    let config = site.config.to_str().unwrap().to_owned();
    let vcode = gateway::demo::association().unwrap().to_string();
    let call = || async {
        let headers =
            [("x-legal-basis", ASSOC_LEGAL_BASIS), ("x-purpose", ASSOC_PURPOSE), ("x-subject", vcode.as_str())];
        let req = gateway::client::request(Method::GET, "/associations/association", &headers, Bytes::new()).unwrap();
        site.client(ASSOC_CALLER, false).send(req).await.unwrap()
    };
    let (code, _, err) = passerelle(&["policy", "export", "--config", &config]);
    assert_eq!(code, 2, "a store never started holds no policy");
    assert!(err.contains("holds no policy yet"), "{err}");

    // First start: the configured bundles go into the store.
    let mut gw = site.start("first.log").await;
    assert_eq!(call().await.status, 200);
    assert!(support::terminate(&mut gw).success());

    // Export, suspend the association protocol in the exported bundle, import it.
    let (code, exported, err) = passerelle(&["policy", "export", "--config", &config]);
    assert_eq!(code, 0, "{err}");
    assert!(exported.starts_with("# Passerelle policy, version 1"), "{exported}");
    let mut policy = policies::bundle::load_texts([("export", exported.as_str())]).unwrap();
    let ins = policy.instruments.iter_mut().find(|i| i.reference == ASSOC_LEGAL_BASIS).unwrap();
    ins.status = Some(Status::Suspended);
    ins.suspended_reason = Some("protocol under review by the committee".to_owned());
    let edited = site.path().join("edited.toml");
    std::fs::write(&edited, toml::to_string(&policy).unwrap()).unwrap();
    // A broken bundle first: nothing is imported, and the problem is named.
    let broken = site.path().join("broken.toml");
    std::fs::write(
        &broken,
        "[[instruments]]\nreference = \"P\"\nkind = \"protocol\"\ntitle = \"t\"\nstatus = \"active\"\n",
    )
    .unwrap();
    let (code, _, err) = passerelle(&["policy", "import", "--config", &config, broken.to_str().unwrap()]);
    assert_eq!(code, 1);
    assert!(err.contains("nothing imported") && err.contains("protocol"), "{err}");
    let (code, out, err) = passerelle(&["policy", "import", "--config", &config, edited.to_str().unwrap()]);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("policy version 2"), "{out}");

    // The store wins over the unchanged bundles on disk.
    let mut gw = site.start("second.log").await;
    let a = call().await;
    assert_eq!(a.code(), Some("FLOW_SUSPENDED"), "{}", a.text());
    assert!(a.text().contains("protocol under review by the committee"));
    assert!(support::terminate(&mut gw).success());

    // Edited bundles on disk are imported at the next start (version 3), replacing the policy.
    let path = site.path().join("bundles").join("associations.toml");
    let mut text = std::fs::read_to_string(&path).unwrap();
    text.push_str("\n# reviewed\n");
    std::fs::write(&path, text).unwrap();
    let mut gw = site.start("third.log").await;
    assert_eq!(call().await.status, 200);
    assert!(support::terminate(&mut gw).success());
    let log = std::fs::read_to_string(site.path().join("third.log")).unwrap();
    assert!(log.contains("policy bundles imported into the store"), "{log}");
    let (_, exported, _) = passerelle(&["policy", "export", "--config", &config]);
    assert!(exported.starts_with("# Passerelle policy, version 3"));

    // Three policy changes, each recorded; the trail verifies.
    let audit = site.path().join("audit");
    let records = gateway::audit::verify::read_records(&audit).unwrap();
    let changes: Vec<_> =
        records.iter().filter(|r| r.record.kind == gateway::audit::RecordKind::PolicyChange).collect();
    assert_eq!(changes.len(), 3);
    assert_eq!(changes[1].record.operation, "passerelle policy import");
    let key = site.path().join("pki/audit-signing.pub");
    let (code, out, err) =
        passerelle(&["audit", "verify", audit.to_str().unwrap(), "--public-key", key.to_str().unwrap()]);
    assert_eq!(code, 0, "{out}{err}");

    // Pruning by hand never goes below a source's declared minimum: the National Register's
    // LRA flows keep ten years (seed 003).
    let dir = audit.to_str().unwrap();
    let (code, out, err) = passerelle(&["audit", "prune", dir, "--retention-days", "30", "--config", &config]);
    assert_eq!(code, 2, "{out}{err}");
    assert!(err.contains("source 'rn' requires its audit records to be kept 3653 days"), "{err}");
    let (code, out, err) = passerelle(&["audit", "prune", dir, "--retention-days", "3653", "--config", &config]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("0 segment(s) removed"), "{out}");
}
