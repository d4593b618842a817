//! The operations listener: health, readiness by dependency, and metrics whose counters match
//! the calls made — read back by a real Prometheus exposition-format parser.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::process::Command;

use tests::{ASSOC_CALLER, Harness, association, person, sigedis, vcode};

async fn get(h: &Harness, path: &str) -> (u16, String) {
    let addr = h.demo.gateway.ops_addr.unwrap();
    let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
    let req = format!("GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
    tokio::io::AsyncWriteExt::write_all(&mut s, req.as_bytes()).await.unwrap();
    let mut buf = Vec::new();
    tokio::io::AsyncReadExt::read_to_end(&mut s, &mut buf).await.unwrap();
    let text = String::from_utf8(buf).unwrap();
    let status = text[9..12].parse().unwrap();
    let body = text.split_once("\r\n\r\n").unwrap().1.to_owned();
    (status, body)
}

const PARSE: &str = r#"
import sys
from prometheus_client.parser import text_string_to_metric_families
for fam in text_string_to_metric_families(sys.stdin.read()):
    for s in fam.samples:
        if s.name == "passerelle_requests_total":
            l = s.labels
            print(f"{l['service']}|{l['caller']}|{l['outcome']}|{l['code']}|{int(s.value)}")
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

    let (status, text) = get(&h, "/metrics").await;
    assert_eq!(status, 200);
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
        "the exposition did not parse (.ci/run installs prometheus_client): {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let mut samples: Vec<String> = String::from_utf8(out.stdout).unwrap().lines().map(str::to_owned).collect();
    samples.sort();
    assert_eq!(
        samples,
        [
            "associations.association|0207123407|granted||3",
            "none|unregistered|refused|CLIENT_CERT_INVALID|1",
            "sigedis.pensions|0456123494|refused|CONSENT_MISSING|2",
        ]
    );
    // Never a personal identifier in any label or value line.
    assert!(!text.contains(&person()) && !text.contains(&vcode()));
    // The six calls, and the policy import of the first start.
    assert!(text.contains("passerelle_audit_records_total 7"), "{text}");
    assert!(text.contains("passerelle_request_duration_seconds_bucket"));
}
