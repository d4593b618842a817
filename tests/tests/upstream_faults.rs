//! Faults of the source behind the gateway, each from a real server on a real socket: a reset
//! in the middle of the answer, bytes that are not HTTP, an answer outside the layout, an
//! answer 100 times larger than the source's limit, a source that keeps failing (the circuit
//! breaker opens, spares it, and closes when it answers again). Each fault gives its documented
//! code, an audit record of the call, no hang, and leaves the other sources alone.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use gateway::audit::verify::read_records;
use http::StatusCode;
use tests::{ASSOC_CALLER, Answer, Harness, association, person, sigedis, vcode};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// A TCP server that reads one request head, writes `reply`, then closes the connection —
/// with a reset (SO_LINGER 0) when `reset` is set. Counts the requests it read.
async fn raw_upstream(reply: Vec<u8>, reset: bool) -> (String, Arc<AtomicUsize>, tokio::task::JoinHandle<()>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let hits = Arc::new(AtomicUsize::new(0));
    let counted = hits.clone();
    let task = tokio::spawn(async move {
        loop {
            let Ok((mut s, _)) = listener.accept().await else { return };
            let reply = reply.clone();
            let counted = counted.clone();
            tokio::spawn(async move {
                let mut head = Vec::new();
                let mut buf = [0u8; 4096];
                while !head.windows(4).any(|w| w == b"\r\n\r\n") {
                    match s.read(&mut buf).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => head.extend_from_slice(&buf[..n]),
                    }
                }
                counted.fetch_add(1, Ordering::SeqCst);
                let _ = s.write_all(&reply).await;
                let _ = s.flush().await;
                if reset {
                    let _ = s.set_zero_linger();
                }
                drop(s);
            });
        }
    });
    (url, hits, task)
}

/// The one audit record of the call with this request id.
fn record_of(h: &Harness, request_id: &str) -> gateway::audit::Record {
    let found: Vec<_> = read_records(&h.demo.config.audit.dir)
        .unwrap()
        .into_iter()
        .filter(|r| r.record.request_id == request_id)
        .map(|r| r.record)
        .collect();
    assert_eq!(found.len(), 1, "{request_id}: one audit record, found {}", found.len());
    found.into_iter().next().unwrap()
}

/// Calls the association register as agency A with `request_id`, bounded in time.
async fn call(h: &Harness, request_id: &str) -> (Answer, Duration) {
    let started = Instant::now();
    let a = association(&h.client(ASSOC_CALLER), &vcode(), &[("x-request-id", request_id)]).await.unwrap();
    (a, started.elapsed())
}

fn assert_refused(h: &Harness, a: &Answer, request_id: &str, status: StatusCode, code: &str) {
    assert_eq!((a.status, a.code()), (status, Some(code)), "{request_id}: {}", a.text());
    assert_eq!(a.headers["content-type"], "application/problem+json", "{request_id}");
    let r = record_of(h, request_id);
    assert_eq!(r.code.as_deref(), Some(code), "{request_id}: the record names the code");
    assert_eq!(r.status, status.as_u16(), "{request_id}");
    assert!(r.fields.is_empty(), "{request_id}: no field left, none recorded as released");
}

async fn harness_on(url: &str, extra: &[(&str, &str)]) -> Harness {
    let mut o = vec![("PASSERELLE__SOURCES__ASSOCIATIONS__UPSTREAM", url)];
    o.extend_from_slice(extra);
    Harness::with_overrides(&o).await.unwrap()
}

#[tokio::test]
async fn a_reset_or_a_break_in_the_middle_of_the_answer_is_upstream_unavailable() {
    let head = b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: 4000\r\n\r\n{\"vCode\":\"V00";
    for (name, reset) in [("reset", true), ("closed", false)] {
        let (url, hits, task) = raw_upstream(head.to_vec(), reset).await;
        let h = harness_on(&url, &[]).await;
        let (a, took) = call(&h, name).await;
        assert_refused(&h, &a, name, StatusCode::BAD_GATEWAY, "UPSTREAM_UNAVAILABLE");
        assert!(a.json().unwrap()["detail"].as_str().unwrap().contains("broke off"), "{name}: {}", a.text());
        assert_eq!(hits.load(Ordering::SeqCst), 1, "{name}: no retry of a call not known idempotent");
        assert!(took < Duration::from_secs(4), "{name}: took {took:?}");
        task.abort();
    }
}

#[tokio::test]
async fn bytes_that_are_not_http_are_upstream_unavailable() {
    let (url, hits, task) = raw_upstream(b"SSH-2.0-OpenSSH_9.2\r\n\r\n\x00\xff garbage".to_vec(), false).await;
    let h = harness_on(&url, &[]).await;
    let (a, took) = call(&h, "garbage").await;
    assert_refused(&h, &a, "garbage", StatusCode::BAD_GATEWAY, "UPSTREAM_UNAVAILABLE");
    assert_eq!(hits.load(Ordering::SeqCst), 1);
    assert!(took < Duration::from_secs(4), "took {took:?}");
    task.abort();
}

#[tokio::test]
async fn garbage_inside_a_well_formed_answer_is_an_upstream_layout_violation() {
    let body = b"\x00\x01 this is not JSON {{{";
    let mut reply = format!(
        "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n",
        body.len()
    )
    .into_bytes();
    reply.extend_from_slice(body);
    let (url, _hits, task) = raw_upstream(reply, false).await;
    let h = harness_on(&url, &[]).await;
    let (a, _) = call(&h, "not-json").await;
    assert_refused(&h, &a, "not-json", StatusCode::BAD_GATEWAY, "UPSTREAM_LAYOUT_VIOLATION");
    assert!(!a.text().contains("this is not JSON"), "nothing of the source's answer leaves");
    task.abort();
}

/// A valid association answer that leaves its connection open (no `connection: close`).
fn kept_alive_answer() -> Vec<u8> {
    let body = tests::association_doc("x").to_string();
    format!("HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n{body}", body.len())
        .into_bytes()
}

/// Makes `n` calls one after the other; each must be answered.
async fn answered_in_turn(h: &Harness, prefix: &str, n: usize) {
    for i in 0..n {
        let (a, _) = call(h, &format!("{prefix}-{i}")).await;
        assert_eq!(a.status, StatusCode::OK, "call {i}: {}", a.text());
    }
}

#[tokio::test]
async fn sequential_calls_to_a_source_share_one_kept_alive_connection() {
    // A source that answers any number of requests per connection, counting connections.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let reply = kept_alive_answer();
    let connections = Arc::new(AtomicUsize::new(0));
    let counted = connections.clone();
    let task = tokio::spawn(async move {
        loop {
            let Ok((mut s, _)) = listener.accept().await else { return };
            counted.fetch_add(1, Ordering::SeqCst);
            let reply = reply.clone();
            tokio::spawn(async move {
                let mut head = Vec::new();
                let mut buf = [0u8; 4096];
                loop {
                    while !head.windows(4).any(|w| w == b"\r\n\r\n") {
                        match s.read(&mut buf).await {
                            Ok(0) | Err(_) => return,
                            Ok(n) => head.extend_from_slice(&buf[..n]),
                        }
                    }
                    head.clear();
                    if s.write_all(&reply).await.is_err() {
                        return;
                    }
                }
            });
        }
    });
    answered_in_turn(&harness_on(&url, &[]).await, "kept", 20).await;
    assert_eq!(connections.load(Ordering::SeqCst), 1, "the calls went over one connection");
    task.abort();
}

#[tokio::test]
async fn a_source_that_closes_each_kept_alive_connection_still_answers_every_call() {
    // The answer does not say `connection: close`, so the gateway keeps the connection for the
    // next call; the source closes it anyway. The next call must not fail on it: it takes a
    // new connection (a request is never sent twice).
    let (url, hits, task) = raw_upstream(kept_alive_answer(), false).await;
    answered_in_turn(&harness_on(&url, &[]).await, "again", 20).await;
    assert_eq!(hits.load(Ordering::SeqCst), 20, "one request per call, none repeated");
    task.abort();
}

#[tokio::test]
async fn an_answer_that_repeats_a_key_is_an_upstream_layout_violation() {
    // The layout would check one of the two names and the caller might read the other.
    let doc = tests::association_doc("x").to_string();
    let body = doc.replacen('{', r#"{"name":"SECOND-NAME-OF-THE-ANSWER","#, 1);
    assert!(serde_json::from_str::<serde_json::Value>(&body).is_ok(), "serde_json alone would take it");
    let reply = format!(
        "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
        body.len()
    );
    let (url, _hits, task) = raw_upstream(reply.into_bytes(), false).await;
    let h = harness_on(&url, &[]).await;
    let (a, _) = call(&h, "twice").await;
    assert_refused(&h, &a, "twice", StatusCode::BAD_GATEWAY, "UPSTREAM_LAYOUT_VIOLATION");
    assert!(a.text().contains("repeats a key"), "{}", a.text());
    assert!(!a.text().contains("SECOND-NAME"), "nothing of the source's answer leaves");
    task.abort();
}

#[tokio::test]
async fn an_answer_a_hundred_times_the_limit_is_refused_without_reading_it_all() {
    const LIMIT: usize = 8 * 1024;
    let mut doc = tests::association_doc("x");
    doc["name"] = serde_json::Value::String("N".repeat(100 * LIMIT));
    let body = doc.to_string();
    assert!(body.len() >= 100 * LIMIT);
    // Announced by Content-Length, and streamed without it (chunked, as a source that does
    // not know its size would send it).
    let announced = {
        let mut r =
            format!("HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n", body.len())
                .into_bytes();
        r.extend_from_slice(body.as_bytes());
        r
    };
    let chunked = {
        let mut r = b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ntransfer-encoding: chunked\r\n\r\n".to_vec();
        for chunk in body.as_bytes().chunks(4096) {
            r.extend_from_slice(format!("{:x}\r\n", chunk.len()).as_bytes());
            r.extend_from_slice(chunk);
            r.extend_from_slice(b"\r\n");
        }
        r.extend_from_slice(b"0\r\n\r\n");
        r
    };
    let limit = LIMIT.to_string();
    for (name, reply) in [("announced", announced), ("chunked", chunked)] {
        let (url, _hits, task) = raw_upstream(reply, false).await;
        let h = harness_on(&url, &[("PASSERELLE__SOURCES__ASSOCIATIONS__MAX_RESPONSE_BYTES", limit.as_str())]).await;
        let (a, took) = call(&h, name).await;
        assert_refused(&h, &a, name, StatusCode::BAD_GATEWAY, "UPSTREAM_ANSWER_TOO_LARGE");
        assert!(a.body.len() < 1024, "{name}: the refusal is small, {} bytes", a.body.len());
        assert!(took < Duration::from_secs(4), "{name}: took {took:?}");
        // A too-large answer shows the source is up: it does not count towards the breaker.
        for i in 0..6 {
            let (a, _) = call(&h, &format!("{name}-{i}")).await;
            assert_eq!(a.code(), Some("UPSTREAM_ANSWER_TOO_LARGE"), "{name}-{i}");
        }
        task.abort();
    }
}

/// A real upstream that answers 503 while `healthy` is false and a valid association
/// otherwise, counting the calls it gets.
async fn switchable_upstream() -> (adapters::sandbox::SandboxServer, Arc<AtomicBool>, Arc<AtomicUsize>) {
    let healthy = Arc::new(AtomicBool::new(false));
    let hits = Arc::new(AtomicUsize::new(0));
    let (up, n) = (healthy.clone(), hits.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let server = adapters::sandbox::serve(listener, move |_req| {
        n.fetch_add(1, Ordering::SeqCst);
        let ok = up.load(Ordering::SeqCst);
        async move {
            if ok {
                adapters::sandbox::json(StatusCode::OK, &tests::association_doc("back"))
            } else {
                adapters::sandbox::json(StatusCode::SERVICE_UNAVAILABLE, &serde_json::json!({"down": true}))
            }
        }
    })
    .unwrap();
    (server, healthy, hits)
}

async fn circuit_gauge(h: &Harness) -> Option<i64> {
    let (_, text) = tests::ops_get(h, "/metrics").await;
    text.lines()
        .filter(|l| l.starts_with("passerelle_upstream_circuit_open{"))
        .find(|l| l.contains("source=\"associations\"") && l.contains("side=\"production\""))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
}

#[tokio::test]
async fn the_circuit_breaker_opens_spares_the_source_and_closes_when_it_answers() {
    let (server, healthy, hits) = switchable_upstream().await;
    let url = server.url();
    let h = harness_on(
        &url,
        &[
            ("PASSERELLE__SOURCES__ASSOCIATIONS__BREAKER_FAILURES", "3"),
            ("PASSERELLE__SOURCES__ASSOCIATIONS__BREAKER_OPEN_MS", "1500"),
        ],
    )
    .await;
    // Three calls reach the failing source.
    for i in 0..3 {
        let id = format!("failing-{i}");
        let (a, _) = call(&h, &id).await;
        assert_refused(&h, &a, &id, StatusCode::BAD_GATEWAY, "UPSTREAM_UNAVAILABLE");
    }
    assert_eq!(hits.load(Ordering::SeqCst), 3);
    assert_eq!(circuit_gauge(&h).await, Some(1), "the gauge shows the open circuit");
    // Open: refused at once, the source is not called.
    for i in 0..5 {
        let id = format!("open-{i}");
        let (a, took) = call(&h, &id).await;
        assert_refused(&h, &a, &id, StatusCode::SERVICE_UNAVAILABLE, "UPSTREAM_CIRCUIT_OPEN");
        assert!(took < Duration::from_secs(2), "took {took:?}");
    }
    assert_eq!(hits.load(Ordering::SeqCst), 3, "no call reached the source while the circuit was open");
    // Another source is not affected.
    let p = person();
    tests::sigedis_consent(&h, &p).await.unwrap();
    let a = sigedis(&h.client(tests::SIGEDIS_CALLER), &p, &[]).await.unwrap();
    assert_eq!(a.status, StatusCode::OK, "{}", a.text());

    // After the open period a probe goes through; the source still fails: open again.
    tokio::time::sleep(Duration::from_millis(1_600)).await;
    let (a, _) = call(&h, "probe-fails").await;
    assert_refused(&h, &a, "probe-fails", StatusCode::BAD_GATEWAY, "UPSTREAM_UNAVAILABLE");
    assert_eq!(hits.load(Ordering::SeqCst), 4, "exactly one probe");
    let (a, _) = call(&h, "reopened").await;
    assert_refused(&h, &a, "reopened", StatusCode::SERVICE_UNAVAILABLE, "UPSTREAM_CIRCUIT_OPEN");

    // The source recovers; the next probe closes the circuit and calls flow again.
    healthy.store(true, Ordering::SeqCst);
    tokio::time::sleep(Duration::from_millis(1_600)).await;
    for i in 0..3 {
        let (a, _) = call(&h, &format!("closed-{i}")).await;
        assert_eq!(a.status, StatusCode::OK, "closed-{i}: {}", a.text());
    }
    assert_eq!(hits.load(Ordering::SeqCst), 7);
    assert_eq!(circuit_gauge(&h).await, Some(0), "the gauge shows the closed circuit");
    server.abort();
}

#[tokio::test]
async fn identifiers_failing_their_check_digits_in_an_answer_never_leave() {
    // The right shape (the schema's patterns hold) with wrong check digits.
    let mut bad_iban = tests::association_doc("iban");
    bad_iban["bankAccount"] = "BE68539007547035".into();
    let mut bad_vcode = tests::association_doc("vcode");
    bad_vcode["vCode"] = "V0000000".into();
    for (name, doc) in [("bad-iban", bad_iban), ("bad-vcode", bad_vcode)] {
        let (server, hits) = tests::counting_upstream(doc).await.unwrap();
        let h = harness_on(&server.url(), &[]).await;
        let (a, _) = call(&h, name).await;
        assert_refused(&h, &a, name, StatusCode::BAD_GATEWAY, "UPSTREAM_LAYOUT_VIOLATION");
        let detail = a.json().unwrap()["detail"].as_str().unwrap().to_owned();
        assert!(detail.contains("invalid"), "{name}: {detail}");
        assert!(!detail.contains("BE68") && !detail.contains("V0000000"), "{name}: the value is not quoted: {detail}");
        assert_eq!(hits.load(Ordering::SeqCst), 1);
        server.abort();
    }
    // The same document with a valid IBAN leaves.
    let mut good = tests::association_doc("iban");
    good["bankAccount"] = "BE68539007547034".into();
    let (server, _) = tests::counting_upstream(good).await.unwrap();
    let h = harness_on(&server.url(), &[]).await;
    let (a, _) = call(&h, "good-iban").await;
    assert_eq!(a.status, StatusCode::OK, "{}", a.text());
    server.abort();
}
