//! The load generator against a real gateway (the test harness's, in this process, so that the
//! CPU accounting can read this process): every mode runs, counts answers by status and code,
//! tells intended refusals from unexpected ones, and divides CPU time by requests.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::Path;
use std::process::Command;

use tests::Harness;

fn mix(vcode: &str) -> String {
    format!(
        r#"
[[request]]
name = "association"
weight = 9
path = "/associations/association"
headers = {{ x-legal-basis = "{basis}", x-purpose = "{purpose}", x-subject = "{vcode}" }}

[[request]]
name = "wrong-purpose"
weight = 1
path = "/associations/association"
headers = {{ x-legal-basis = "{basis}", x-purpose = "NOT_A_PURPOSE", x-subject = "{vcode}" }}
expect_status = 403
expect_code = "PURPOSE_NOT_ALLOWED"
"#,
        basis = gateway::demo::ASSOC_LEGAL_BASIS,
        purpose = gateway::demo::ASSOC_PURPOSE,
    )
}

fn raise_quota(file: &str, text: String) -> String {
    let seed = "rate = { max = 2000, per = \"day\" }";
    assert!(!file.starts_with("associations") || text.contains(seed), "the seed grant's quota changed");
    text.replace("rate = { max = 2000, per = \"day\" }", "rate = { max = 1000000000, per = \"day\" }")
}

fn load(dir: &Path, target: &str, extra: &[&str]) -> serde_json::Value {
    let out = dir.join("report.json");
    let p = |f: &str| dir.join(f).to_str().unwrap().to_owned();
    let mut args = vec![
        "--target".to_owned(),
        target.to_owned(),
        "--ca".into(),
        p("ca.pem"),
        "--cert".into(),
        p("client.pem"),
        "--key".into(),
        p("client.key"),
        "--mix".into(),
        p("mix.toml"),
        "--json".into(),
        out.to_str().unwrap().to_owned(),
        "--pid".into(),
        std::process::id().to_string(),
    ];
    args.extend(extra.iter().map(|s| (*s).to_owned()));
    let run = Command::new(env!("CARGO_BIN_EXE_passerelle-load")).args(&args).output().unwrap();
    assert!(run.status.success(), "{}", String::from_utf8_lossy(&run.stderr));
    let table = String::from_utf8_lossy(&run.stdout);
    assert!(table.contains("latency µs: p50"), "{table}");
    serde_json::from_str(&std::fs::read_to_string(out).unwrap()).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_mode_measures_a_real_gateway() {
    // The seed grant allows 2,000 calls a day; a fast machine makes more than that in these few
    // seconds. The quota is raised (as compare.py does) so that every refusal is an intended one.
    let h = Harness::with(&[], Some(raise_quota)).await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let issued = h.demo.pki.client(gateway::demo::ASSOC_CALLER).unwrap();
    std::fs::write(dir.path().join("ca.pem"), h.demo.pki.ca.cert_pem()).unwrap();
    std::fs::write(dir.path().join("client.pem"), &issued.cert_pem).unwrap();
    std::fs::write(dir.path().join("client.key"), &issued.key_pem).unwrap();
    std::fs::write(dir.path().join("mix.toml"), mix(&tests::vcode())).unwrap();
    let target = h.demo.gateway.data_addr.to_string();
    let d = dir.path().to_owned();
    let t = target.clone();

    let closed = tokio::task::spawn_blocking(move || {
        load(&d, &t, &["--mode", "closed", "--connections", "2", "--duration", "1", "--warmup", "0"])
    })
    .await
    .unwrap();
    let requests = closed["requests"].as_u64().unwrap();
    assert!(requests >= 10, "{closed}");
    assert_eq!(closed["unexpected"], 0, "{closed}");
    assert_eq!(closed["transport_errors"], 0, "{closed}");
    // The draw is deterministic per connection; without warm-up the first request of
    // connection 1 is the intended refusal.
    let refused = closed["by_code"]["PURPOSE_NOT_ALLOWED"].as_u64().unwrap();
    assert!(refused > 0 && refused < requests / 2, "about a tenth are intended refusals: {closed}");
    assert_eq!(closed["by_status"]["200"].as_u64().unwrap() + refused, requests);
    let cpu = closed["cpu_us_per_request"].as_f64().unwrap();
    assert!(cpu > 0.0, "{closed}");
    let kernel = closed["cpu_us_per_request_kernel"].as_f64().unwrap();
    assert!((0.0..=cpu).contains(&kernel), "the kernel's part is part of the whole: {closed}");

    // Open loop at 100 req/s for 1 s: about 100 requests, whatever the latency.
    let (d, t) = (dir.path().to_owned(), target.clone());
    let open = tokio::task::spawn_blocking(move || {
        load(&d, &t, &["--mode", "open", "--rate", "100", "--connections", "2", "--duration", "1", "--warmup", "0.2"])
    })
    .await
    .unwrap();
    let n = open["requests"].as_u64().unwrap();
    assert!((80..=102).contains(&n), "{open}");
    assert_eq!(open["unexpected"], 0, "{open}");
    assert_eq!(open["tick_us"], 0, "{open}");

    // The same on a 25 ms tick: sends are 10 ms apart, so the pacer wakes for about every
    // second or third of them (at most once a tick over the 1.25 s from start to end, against
    // 125 wake-ups without), and every send still goes.
    let (d, t) = (dir.path().to_owned(), target.clone());
    let ticked = tokio::task::spawn_blocking(move || {
        let args = ["--mode", "open", "--rate", "100", "--connections", "2", "--duration", "1", "--warmup", "0.2"];
        load(&d, &t, &[&args[..], &["--tick-us", "25000"]].concat())
    })
    .await
    .unwrap();
    let n = ticked["requests"].as_u64().unwrap();
    assert!((80..=102).contains(&n), "{ticked}");
    assert_eq!((ticked["unexpected"].as_u64(), ticked["tick_us"].as_u64()), (Some(0), Some(25_000)), "{ticked}");
    let sleeps = ticked["pacer_sleeps"].as_u64().unwrap();
    assert!((1..=52).contains(&sleeps), "{ticked}");

    // A new connection per request.
    let (d, t) = (dir.path().to_owned(), target);
    let hs = tokio::task::spawn_blocking(move || {
        load(&d, &t, &["--mode", "handshake", "--connections", "2", "--duration", "1", "--warmup", "0.2"])
    })
    .await
    .unwrap();
    assert!(hs["requests"].as_u64().unwrap() >= 2, "{hs}");
    assert_eq!((hs["unexpected"].as_u64(), hs["transport_errors"].as_u64()), (Some(0), Some(0)), "{hs}");

    // A mix that expects the wrong thing is reported, not hidden.
    std::fs::write(
        dir.path().join("mix.toml"),
        mix(&tests::vcode()).replace("expect_code = \"PURPOSE_NOT_ALLOWED\"", "expect_code = \"RATE_EXCEEDED\""),
    )
    .unwrap();
    let (d, t) = (dir.path().to_owned(), h.demo.gateway.data_addr.to_string());
    let wrong = tokio::task::spawn_blocking(move || {
        load(&d, &t, &["--mode", "closed", "--connections", "1", "--duration", "0.5", "--warmup", "0"])
    })
    .await
    .unwrap();
    assert!(wrong["unexpected"].as_u64().unwrap() > 0, "{wrong}");
}
