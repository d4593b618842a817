//! The data plane over real sockets and real TLS: who gets in, and what limits hold.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{Method, StatusCode};
use tests::{ASSOC_CALLER, BAD_KBO, EXPIRED, Harness, NO_KBO, NOT_YET_VALID, SERVER_EKU, association, send, vcode};

#[tokio::test]
async fn valid_organisation_certificate_passes_over_http1_and_http2() {
    let h = Harness::start().await.unwrap();
    for client in [h.client(ASSOC_CALLER), h.client_h2(ASSOC_CALLER)] {
        let a = association(&client, &vcode(), &[("x-request-id", "case-17")]).await.unwrap();
        assert_eq!(a.status, StatusCode::OK, "{}", a.text());
        assert_eq!(a.headers["x-request-id"], "case-17", "the caller's request id is echoed");
        assert_eq!(a.json().unwrap()["vCode"], vcode());
    }
    // Without X-Request-Id one is generated and echoed.
    let a = association(&h.client(ASSOC_CALLER), &vcode(), &[]).await.unwrap();
    assert_eq!(a.headers["x-request-id"].len(), 33);
}

/// Refused at the handshake: the client never gets an HTTP answer.
async fn assert_handshake_refused(h: &Harness, name: Option<&str>) {
    let client = match name {
        Some(n) => h.client(n),
        None => h.anonymous(),
    };
    match association(&client, &vcode(), &[]).await {
        Ok(a) => panic!("{name:?}: expected a refused handshake, got HTTP {} {}", a.status, a.text()),
        Err(e) => {
            let msg = format!("{e:#}");
            assert!(!msg.contains("no answer within"), "{name:?}: the gateway hung instead of refusing: {msg}");
        }
    }
}

#[tokio::test]
async fn faulty_certificates_are_refused_at_the_handshake() {
    let h = Harness::start().await.unwrap();
    assert_handshake_refused(&h, None).await;
    assert_handshake_refused(&h, Some(EXPIRED)).await;
    assert_handshake_refused(&h, Some(NOT_YET_VALID)).await;
    assert_handshake_refused(&h, Some(gateway::demo::REVOKED)).await;
    assert_handshake_refused(&h, Some(SERVER_EKU)).await;
    // Another CA, carrying a valid enterprise number.
    let mut rogue = certs::Ca::generate("Rogue").unwrap();
    let issued = rogue.issue_client(&certs::ClientSpec::org("Rogue", h.agency_kbo())).unwrap();
    let client = gateway::client::MtlsClient::new(
        h.demo.gateway.data_addr,
        h.demo.pki.ca.cert_pem().as_bytes(),
        Some((issued.cert_pem.as_bytes(), issued.key_pem.as_bytes())),
        gateway::client::HttpVersion::Http1,
    )
    .unwrap();
    assert!(association(&client, &vcode(), &[]).await.is_err(), "a certificate of another CA must not get an answer");
    // The gateway still serves good callers afterwards.
    assert_eq!(association(&h.client(ASSOC_CALLER), &vcode(), &[]).await.unwrap().status, 200);
}

#[tokio::test]
async fn certificate_without_a_valid_enterprise_number_gets_client_cert_invalid() {
    let h = Harness::start().await.unwrap();
    for (name, needle) in [(NO_KBO, "carries no enterprise number"), (BAD_KBO, "check digits")] {
        let a = association(&h.client(name), &vcode(), &[]).await.unwrap();
        assert_eq!(a.status, StatusCode::FORBIDDEN, "{name}");
        assert_eq!(a.code(), Some("CLIENT_CERT_INVALID"), "{name}");
        assert_eq!(a.headers["content-type"], "application/problem+json");
        let doc = a.json().unwrap();
        assert!(doc["detail"].as_str().unwrap().contains(needle), "{name}: {doc}");
    }
}

#[tokio::test]
async fn body_over_the_limit_gets_413() {
    let h = Harness::with_overrides(&[("PASSERELLE__LIMITS__MAX_BODY_BYTES", "1024")]).await.unwrap();
    let agency = h.client(ASSOC_CALLER);
    let v = vcode();
    let headers =
        [("x-legal-basis", tests::ASSOC_LEGAL_BASIS), ("x-purpose", tests::ASSOC_PURPOSE), ("x-subject", v.as_str())];
    let path = "/associations/association";
    // Announced by Content-Length (HTTP/1.1): refused before the body is read.
    let a = send(&agency, Method::GET, path, &headers, Bytes::from(vec![b'x'; 4096])).await.unwrap();
    assert_eq!(a.status, StatusCode::PAYLOAD_TOO_LARGE);
    assert_eq!(a.code(), Some("BODY_TOO_LARGE"));
    // At the limit the size check passes; this look-up's layout then refuses any body.
    let a = send(&agency, Method::GET, path, &headers, Bytes::from(vec![b'x'; 1024])).await.unwrap();
    assert_eq!(a.code(), Some("LAYOUT_VIOLATION"));
    // HTTP/2 without Content-Length: refused while reading.
    let h2 = h.client_h2(ASSOC_CALLER);
    let mut req = gateway::client::request(Method::GET, path, &headers, Bytes::from(vec![b'y'; 4096])).unwrap();
    req.headers_mut().remove(http::header::CONTENT_LENGTH);
    let a = h2.send(req).await.unwrap();
    assert_eq!(a.status, StatusCode::PAYLOAD_TOO_LARGE);
}

#[tokio::test]
async fn slow_upstream_gets_a_timeout_not_a_hang() {
    // A real upstream that answers after 5 s.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let slow = adapters::sandbox::serve(listener, |_req| async {
        tokio::time::sleep(Duration::from_secs(5)).await;
        adapters::sandbox::json(StatusCode::OK, &serde_json::json!({}))
    })
    .unwrap();
    let url = slow.url();
    let h = Harness::with_overrides(&[
        ("PASSERELLE__SOURCES__ASSOCIATIONS__UPSTREAM", url.as_str()),
        ("PASSERELLE__SOURCES__ASSOCIATIONS__TIMEOUT_MS", "300"),
    ])
    .await
    .unwrap();
    let started = Instant::now();
    let a = association(&h.client(ASSOC_CALLER), &vcode(), &[]).await.unwrap();
    let took = started.elapsed();
    assert_eq!(a.status, StatusCode::GATEWAY_TIMEOUT);
    assert_eq!(a.code(), Some("UPSTREAM_TIMEOUT"));
    // Generous bound: the point is "answers after its timeout, does not wait for the source".
    assert!(took < Duration::from_secs(4), "took {took:?}");
    slow.abort();
}

#[tokio::test]
async fn unreachable_upstream_gets_upstream_unavailable() {
    // A port that was free a moment ago: connection refused.
    let port = testkit::free_port();
    let url = format!("http://127.0.0.1:{port}");
    let h = Harness::with_overrides(&[("PASSERELLE__SOURCES__ASSOCIATIONS__UPSTREAM", url.as_str())]).await.unwrap();
    let a = association(&h.client(ASSOC_CALLER), &vcode(), &[]).await.unwrap();
    assert_eq!(a.status, StatusCode::BAD_GATEWAY);
    assert_eq!(a.code(), Some("UPSTREAM_UNAVAILABLE"));
}

#[tokio::test]
async fn routing_and_envelope_refusals_are_precise() {
    let h = Harness::start().await.unwrap();
    let agency = h.client(ASSOC_CALLER);
    let v = vcode();
    let env =
        [("x-legal-basis", tests::ASSOC_LEGAL_BASIS), ("x-purpose", tests::ASSOC_PURPOSE), ("x-subject", v.as_str())];
    for path in [
        "/associations/association/",
        "/associations/../associations/association",
        "/associations/%61ssociation",
        "/nope",
    ] {
        let a = send(&agency, Method::GET, path, &env, Bytes::new()).await.unwrap();
        assert_eq!(a.code(), Some("SERVICE_UNKNOWN"), "{path}");
        assert_eq!(a.status, StatusCode::NOT_FOUND, "{path}");
    }
    let a = send(&agency, Method::POST, "/associations/association", &env, Bytes::new()).await.unwrap();
    assert_eq!(a.code(), Some("METHOD_NOT_ALLOWED"));
    assert_eq!(a.headers.get("allow").and_then(|v| v.to_str().ok()), Some("GET"), "RFC 9110 §15.5.6");
    let a = association(&agency, "V12", &[]).await.unwrap();
    assert_eq!(a.code(), Some("SUBJECT_INVALID"));
    assert!(a.json().unwrap()["detail"].as_str().unwrap().contains("expected 8"));
    let a = tests::sigedis(&h.client(tests::SIGEDIS_CALLER), "12345", &[]).await.unwrap();
    assert_eq!(a.code(), Some("SUBJECT_INVALID"));
    let a = association(&agency, &v, &[("x-request-id", "bad id with spaces")]).await.unwrap();
    assert_eq!(a.code(), Some("ENVELOPE_INVALID"));
    assert!(a.headers.contains_key("x-request-id"), "a generated id is still echoed");
}

#[tokio::test]
async fn over_the_in_flight_limit_the_gateway_sheds_load() {
    // A source that holds each call for a second, and room for one call at a time.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let slow = adapters::sandbox::serve(listener, |_req| async {
        tokio::time::sleep(Duration::from_millis(1_000)).await;
        adapters::sandbox::json(StatusCode::OK, &tests::association_doc("slow"))
    })
    .unwrap();
    let url = slow.url();
    let h = Harness::with_overrides(&[
        ("PASSERELLE__SOURCES__ASSOCIATIONS__UPSTREAM", url.as_str()),
        ("PASSERELLE__LIMITS__MAX_IN_FLIGHT", "1"),
    ])
    .await
    .unwrap();
    let first = {
        let c = h.client(ASSOC_CALLER);
        tokio::spawn(async move { association(&c, &vcode(), &[]).await.unwrap() })
    };
    tokio::time::sleep(Duration::from_millis(300)).await;
    let second = association(&h.client(ASSOC_CALLER), &vcode(), &[]).await.unwrap();
    assert_eq!(
        (second.status, second.code()),
        (StatusCode::SERVICE_UNAVAILABLE, Some("OVERLOADED")),
        "{}",
        second.text()
    );
    assert_eq!(first.await.unwrap().status, StatusCode::OK, "the call in flight completes");
    // The slot is free again.
    assert_eq!(association(&h.client(ASSOC_CALLER), &vcode(), &[]).await.unwrap().status, StatusCode::OK);
    slow.abort();
}

#[tokio::test]
async fn a_chain_longer_than_allowed_is_refused_at_the_handshake() {
    // A root that allows intermediates, two intermediates under it, and agency A's enterprise
    // number on a leaf under each.
    let dir = tempfile::tempdir().unwrap();
    let mut root = certs::Ca::generate_root("Organisation root").unwrap();
    let mut first = root.issue_intermediate("Issuing CA 1").unwrap();
    let mut second = first.issue_intermediate("Issuing CA 2").unwrap();
    let kbo = tests::Harness::agency_kbo_static();
    let one = first.issue_client(&certs::ClientSpec::org("One intermediate", kbo)).unwrap();
    let two = second.issue_client(&certs::ClientSpec::org("Two intermediates", kbo)).unwrap();
    let roots = dir.path().join("roots.pem");
    std::fs::write(&roots, root.cert_pem()).unwrap();
    let roots = roots.to_str().unwrap().to_owned();
    // Every CA of the chains publishes its (empty) CRL: revocation is checked along the
    // whole chain, and a certificate of unknown status is refused.
    let crls = dir.path().join("crls.pem");
    let crl_text = [&root, &first, &second].iter().map(|ca| ca.crl(&[], 1).unwrap()).collect::<Vec<_>>().join("\n");
    std::fs::write(&crls, crl_text).unwrap();
    let crls = format!("[{:?}]", crls.to_str().unwrap());
    let h = Harness::with_overrides(&[
        ("PASSERELLE__TLS__CLIENT_CA", roots.as_str()),
        ("PASSERELLE__TLS__CRLS", crls.as_str()),
        ("PASSERELLE__TLS__MAX_INTERMEDIATES", "1"),
    ])
    .await
    .unwrap();
    let client = |leaf: &certs::Issued, chain: &[&certs::Ca]| {
        let pem = std::iter::once(leaf.cert_pem.clone())
            .chain(chain.iter().map(|c| c.cert_pem()))
            .collect::<Vec<_>>()
            .join("\n");
        gateway::client::MtlsClient::new(
            h.demo.gateway.data_addr,
            h.demo.pki.ca.cert_pem().as_bytes(),
            Some((pem.as_bytes(), leaf.key_pem.as_bytes())),
            gateway::client::HttpVersion::Http1,
        )
        .unwrap()
    };
    let a = association(&client(&one, &[&first]), &vcode(), &[]).await.unwrap();
    assert_eq!(a.status, StatusCode::OK, "one intermediate is within the limit: {}", a.text());
    let refused = association(&client(&two, &[&second, &first]), &vcode(), &[]).await;
    assert!(refused.is_err(), "two intermediates, one allowed: {:?}", refused.map(|a| a.status));
    let (_, metrics) = tests::ops_get(&h, "/metrics").await;
    assert!(
        metrics.lines().any(|l| l.starts_with("passerelle_tls_handshake_failures_total")
            && l.contains("reason=\"chain-too-long\"")
            && l.ends_with(" 1")),
        "the refusal is counted with its reason"
    );
}
