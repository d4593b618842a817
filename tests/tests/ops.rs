//! The operations listener: health, readiness by dependency, and metrics whose counters match
//! the calls made — read back by a real Prometheus exposition-format parser.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::process::Command;

use tests::{ASSOC_CALLER, Harness, association, person, sigedis, vcode};

async fn get(h: &Harness, path: &str) -> (u16, String) {
    tests::ops_get(h, path).await
}

const PARSE: &str = r#"
import sys
from prometheus_client.parser import text_string_to_metric_families
for fam in text_string_to_metric_families(sys.stdin.read()):
    for s in fam.samples:
        l = s.labels
        if s.name == "passerelle_requests_total":
            print(f"{l['service']}|{l['caller']}|{l['outcome']}|{l['code']}|{int(s.value)}")
        elif s.name in ("passerelle_stage_duration_seconds_count", "passerelle_consent_checks_total"):
            print(f"{s.name}|{l.get('stage', l.get('result'))}|{int(s.value)}")
        elif s.name == "passerelle_tls_handshake_failures_total" and s.value > 0:
            print(f"{s.name}|{l['listener']}|{l['reason']}|{int(s.value)}")
"#;

#[tokio::test]
async fn metrics_count_the_calls_and_parse_as_prometheus_text() {
    let h = Harness::start().await.unwrap();
    assert_eq!(get(&h, "/healthz").await, (200, "ok\n".to_owned()));
    let (status, body) = get(&h, "/readyz").await;
    assert_eq!(status, 200, "{body}");
    let ready: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(ready["audit_writable"], true);
    assert_eq!(ready["sources"]["associations"], true);

    let agency = h.client(ASSOC_CALLER);
    for _ in 0..3 {
        association(&agency, &vcode(), &[]).await.unwrap();
    }
    for _ in 0..2 {
        sigedis(&h.client("bank-a"), &person(), &[]).await.unwrap();
    }
    association(&h.client(tests::NO_KBO), &vcode(), &[]).await.unwrap();
    // A certificate refused at the handshake: counted by reason, no call.
    assert!(association(&h.client(tests::EXPIRED), &vcode(), &[]).await.is_err());

    // The client may read the server's alert before the server's handshake task has counted
    // the failure: wait (5 s at most) until it is counted, then take the exposition.
    let mut tries = 0;
    let text = loop {
        let (status, text) = get(&h, "/metrics").await;
        assert_eq!(status, 200);
        tries += 1;
        if text.contains("passerelle_tls_handshake_failures_total{listener=\"data\",reason=\"expired\"} 1")
            || tries == 50
        {
            break text;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    };
    let mut child = Command::new("python3")
        .args(["-c", PARSE])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    std::io::Write::write_all(child.stdin.as_mut().unwrap(), text.as_bytes()).unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "the exposition did not parse (scripts/test installs prometheus_client): {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let mut samples: Vec<String> = String::from_utf8(out.stdout).unwrap().lines().map(str::to_owned).collect();
    samples.sort();
    assert_eq!(
        samples,
        [
            "associations.association|0207123407|granted||3",
            // The service asked for is named even when the certificate is refused.
            "associations.association|unregistered|refused|CLIENT_CERT_INVALID|1",
            // Both consent-based calls were checked and found no consent.
            "passerelle_consent_checks_total|expired|0",
            "passerelle_consent_checks_total|missing|2",
            "passerelle_consent_checks_total|revoked|0",
            "passerelle_consent_checks_total|valid|0",
            // Every call that reached the decision was timed there (5), the consent-based
            // ones at the consent check (2), the answered ones at the source and the layout
            // (3), and every call at the audit commit (6).
            "passerelle_stage_duration_seconds_count|audit|6",
            "passerelle_stage_duration_seconds_count|authorize|5",
            "passerelle_stage_duration_seconds_count|consent|2",
            "passerelle_stage_duration_seconds_count|layout|3",
            "passerelle_stage_duration_seconds_count|upstream|3",
            "passerelle_tls_handshake_failures_total|data|expired|1",
            "sigedis.pensions|0456123494|refused|CONSENT_MISSING|2",
        ]
    );
    // Never a personal identifier in any label or value line.
    assert!(!text.contains(&person()) && !text.contains(&vcode()));
    // The six calls, and the policy import of the first start.
    assert!(text.contains("passerelle_audit_records_total 7"), "{text}");
    assert!(text.contains("passerelle_audit_batch_records_sum 7"), "every durable batch observed: {text}");
    assert!(text.contains("passerelle_audit_commit_seconds_count"));
    assert!(text.contains("passerelle_request_duration_seconds_bucket"));
}

/// Every listener echoes the caller's request id; the operations listener is read-only.
#[tokio::test]
async fn the_operations_listener_echoes_request_ids_and_reads_only() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let h = Harness::start().await.unwrap();
    let addr = h.demo.gateway.ops_addr.unwrap();
    for (request, status, allow) in [
        ("GET /healthz HTTP/1.1\r\nHost: x\r\nX-Request-Id: probe-7\r\nConnection: close\r\n\r\n", "200", None),
        (
            "POST /metrics HTTP/1.1\r\nHost: x\r\nX-Request-Id: probe-7\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
            "405",
            Some("allow: get, head"),
        ),
    ] {
        let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
        s.write_all(request.as_bytes()).await.unwrap();
        let mut answer = String::new();
        s.read_to_string(&mut answer).await.unwrap();
        let head = answer.to_ascii_lowercase();
        assert!(answer.starts_with(&format!("HTTP/1.1 {status}")), "{answer}");
        assert!(head.contains("x-request-id: probe-7"), "{answer}");
        if let Some(allow) = allow {
            assert!(head.contains(allow), "{answer}");
        }
    }
    // The control plane and the public listener echo it too.
    let a = tests::send(
        &h.control_client("admin"),
        http::Method::GET,
        "/sources",
        &[("x-request-id", "ctl-probe")],
        bytes::Bytes::new(),
    )
    .await
    .unwrap();
    assert_eq!(a.headers.get("x-request-id").and_then(|v| v.to_str().ok()), Some("ctl-probe"));
    let a = tests::send(
        &h.public_client(),
        http::Method::GET,
        "/public/instruments",
        &[("x-request-id", "pub-probe")],
        bytes::Bytes::new(),
    )
    .await
    .unwrap();
    assert_eq!(a.headers.get("x-request-id").and_then(|v| v.to_str().ok()), Some("pub-probe"));
}

/// `promtool check metrics` (Prometheus's own linter) finds nothing to say about a live
/// exposition after a mixed run; the series alerts read exist at 0 before their first event.
#[tokio::test]
async fn promtool_finds_the_metrics_clean() {
    let h = Harness::start().await.unwrap();
    association(&h.client(ASSOC_CALLER), &vcode(), &[]).await.unwrap();
    sigedis(&h.client("bank-a"), &person(), &[]).await.unwrap();
    assert!(association(&h.client(tests::EXPIRED), &vcode(), &[]).await.is_err());
    let (_, text) = get(&h, "/metrics").await;
    for series in [
        "passerelle_reloads_total{outcome=\"failed\"} 0",
        "passerelle_upstream_errors_total{kind=\"timeout\",source=\"associations\"} 0",
        "passerelle_connections_closed_total{listener=\"data\",reason=\"revoked\"} 0",
        "# TYPE passerelle_audit_records_total counter",
        "# TYPE passerelle_audit_batches_total counter",
    ] {
        assert!(text.contains(series), "{series} missing from:\n{text}");
    }
    let mut child = Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("promtool (Debian's prometheus package; scripts/test installs it)");
    std::io::Write::write_all(child.stdin.as_mut().unwrap(), text.as_bytes()).unwrap();
    let out = child.wait_with_output().unwrap();
    let said = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success() && said.trim().is_empty(), "promtool check metrics: {said}");
}

/// A real Prometheus, started with `docs/prometheus.yml` unmodified, scrapes a gateway whose
/// operations listener is on its default address, and finds the target up.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prometheus_scrapes_the_gateway_with_the_documented_configuration() {
    let default = gateway::config::OpsConfig::default().listen.unwrap();
    if std::net::TcpListener::bind(default).is_err() {
        panic!("{default} is taken: this test needs the operations listener's default address");
    }
    let h = Harness::with_overrides(&[("PASSERELLE__OPS__LISTEN", &default.to_string())]).await.unwrap();
    association(&h.client(ASSOC_CALLER), &vcode(), &[]).await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let web = std::net::SocketAddr::from(([127, 0, 0, 1], testkit::free_port()));
    let config = concat!(env!("CARGO_MANIFEST_DIR"), "/../docs/prometheus.yml");
    let mut prometheus = Command::new("prometheus")
        .arg(format!("--config.file={config}"))
        .arg(format!("--storage.tsdb.path={}", dir.path().display()))
        .arg(format!("--web.listen-address={web}"))
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("prometheus (Debian's prometheus package; scripts/test installs it)");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(40);
    let up = loop {
        if let Ok(Some(status)) = prometheus.try_wait() {
            panic!("Prometheus stopped ({status}) before it scraped the gateway");
        }
        let answer = tokio::task::spawn_blocking(move || {
            let url = format!("http://{web}/api/v1/query?query=up%7Bjob%3D%22passerelle%22%7D");
            let out = Command::new("curl").args(["-s", &url]).output().ok()?;
            serde_json::from_slice::<serde_json::Value>(&out.stdout).ok()
        })
        .await
        .unwrap();
        let value = answer.as_ref().and_then(|a| a["data"]["result"][0]["value"][1].as_str().map(str::to_owned));
        if value.as_deref() == Some("1") || std::time::Instant::now() > deadline {
            break value;
        }
        tokio::time::sleep(std::time::Duration::from_millis(500)).await;
    };
    let _ = prometheus.kill();
    let _ = prometheus.wait();
    assert_eq!(up.as_deref(), Some("1"), "Prometheus never found the gateway up");
}

/// The Grafana dashboard in the repository queries only metrics the operations guide documents
/// (and the gateway exposes: the metrics test above reads them back).
#[test]
fn the_dashboard_uses_documented_metrics() {
    let dash: serde_json::Value =
        serde_json::from_str(include_str!("../../docs/grafana-dashboard.json")).expect("the dashboard is JSON");
    let guide = include_str!("../../docs/operations.md");
    let mut used = std::collections::BTreeSet::new();
    for panel in dash["panels"].as_array().unwrap() {
        for target in panel["targets"].as_array().unwrap() {
            let expr = target["expr"].as_str().unwrap();
            for (i, _) in expr.match_indices("passerelle_") {
                let name: String = expr[i..].chars().take_while(|c| c.is_ascii_lowercase() || *c == '_').collect();
                let base = ["_bucket", "_count", "_sum"]
                    .iter()
                    .fold(name, |n, s| n.strip_suffix(s).map_or(n.clone(), str::to_owned));
                used.insert(base);
            }
        }
    }
    assert!(used.len() >= 10, "{used:?}");
    for name in &used {
        assert!(guide.contains(&format!("`{name}`")), "{name} is not documented in docs/operations.md");
    }
}
