//! What an established connection may still do, over real TLS: a certificate revoked at a
//! reload stops working on the connections already open, certificates that expire end theirs,
//! and every listener bounds what a client may hold open (header trickles, idle connections,
//! floods from one address). Trust anchors' path-length constraints hold.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use gateway::client::{self, HttpVersion, MtlsClient};
use http::{Method, StatusCode};
use tests::{ASSOC_CALLER, ASSOC_LEGAL_BASIS, ASSOC_PURPOSE, Harness, association, send, vcode};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

fn association_request(v: &str) -> http::Request<http_body_util::Full<Bytes>> {
    client::request(
        Method::GET,
        "/associations/association",
        &[("x-legal-basis", ASSOC_LEGAL_BASIS), ("x-purpose", ASSOC_PURPOSE), ("x-subject", v)],
        Bytes::new(),
    )
    .unwrap()
}

/// Seconds the metrics say connections of `listener` were closed for `reason`.
async fn closed(h: &Harness, listener: &str, reason: &str) -> u64 {
    let (_, m) = tests::ops_get(h, "/metrics").await;
    let want = format!("passerelle_connections_closed_total{{listener=\"{listener}\",reason=\"{reason}\"}} ");
    m.lines().find_map(|l| l.strip_prefix(want.as_str())).and_then(|v| v.trim().parse().ok()).unwrap_or(0)
}

/// Issue #25, reproduction 1: the revoked peer's open HTTP/1.1 and HTTP/2 connections end at
/// the reload that revokes it. The test keeps calling on both during the reload: no call
/// begun after the reload answered gets data, and both connections are closed within one
/// second.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_revoked_certificate_stops_working_on_open_connections() {
    let h = Arc::new(Harness::start().await.unwrap());
    let v = vcode();
    let mut h1 = h.client(ASSOC_CALLER).connect().await.unwrap();
    let mut h2 = h.client_h2(ASSOC_CALLER).connect().await.unwrap();
    assert_eq!(h1.send(association_request(&v)).await.unwrap().status, StatusCode::OK);
    assert_eq!(h2.send(association_request(&v)).await.unwrap().status, StatusCode::OK);

    // Both connections keep calling until they are closed; each call notes when it began,
    // when it ended and what it got.
    let (reloaded_tx, reloaded_rx) = tokio::sync::watch::channel(None::<Instant>);
    let hammer = |mut conn: client::Connection, v: String| {
        let reloaded = reloaded_rx.clone();
        tokio::spawn(async move {
            let mut seen = Vec::new();
            loop {
                let began = Instant::now();
                match conn.send(association_request(&v)).await {
                    Ok(a) => seen.push((began, Some((a.status, a.code().map(str::to_owned))))),
                    Err(_) => {
                        seen.push((began, None));
                        return (seen, Instant::now(), *reloaded.borrow());
                    }
                }
                if began.elapsed() > Duration::from_secs(20) {
                    return (seen, Instant::now(), *reloaded.borrow());
                }
            }
        })
    };
    let (t1, t2) = (hammer(h1, v.clone()), hammer(h2, v.clone()));
    tokio::time::sleep(Duration::from_millis(200)).await;

    // Revoke agency A's certificate (with the one revoked from the start), and reload.
    let pki = &h.demo.pki;
    let serials =
        [pki.client(ASSOC_CALLER).unwrap().serial.as_slice(), pki.client("revoked").unwrap().serial.as_slice()];
    std::fs::write(&h.demo.config.tls.crls[0], pki.ca.crl(&serials, 2).unwrap()).unwrap();
    let a = send(&h.control_client("admin"), Method::POST, "/reload", &[], Bytes::new()).await.unwrap();
    let reloaded_at = Instant::now();
    reloaded_tx.send(Some(reloaded_at)).unwrap();
    assert_eq!(a.status, StatusCode::OK, "{}", a.text());
    assert!(a.json().unwrap()["connections_ended"].as_u64().unwrap() >= 2, "{}", a.text());

    for (name, task) in [("HTTP/1.1", t1), ("HTTP/2", t2)] {
        let (seen, closed_at, _) = task.await.unwrap();
        assert!(
            closed_at.duration_since(reloaded_at) < Duration::from_secs(1),
            "{name}: closed {:?} after the reload",
            closed_at.duration_since(reloaded_at)
        );
        for (began, got) in &seen {
            if *began > reloaded_at {
                assert!(
                    !matches!(got, Some((StatusCode::OK, _))),
                    "{name}: a call begun after the reload got data: {got:?}"
                );
                if let Some((status, code)) = got {
                    assert_eq!((*status, code.as_deref()), (StatusCode::FORBIDDEN, Some("CLIENT_CERT_REVOKED")));
                }
            }
        }
        assert!(seen.iter().any(|(_, got)| matches!(got, Some((StatusCode::OK, _)))), "{name}: it worked before");
    }
    // New connections are refused at the handshake; other organisations go on.
    assert!(association(&h.client(ASSOC_CALLER), &v, &[]).await.is_err());
    assert_eq!(tests::sigedis(&h.client("bank-a"), &tests::person(), &[]).await.unwrap().status, StatusCode::FORBIDDEN);
    assert!(closed(&h, "data", "revoked").await >= 2);
}

/// A client certificate that expires while its connection is open ends that connection.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_certificate_that_expires_ends_its_connection() {
    let dir = tempfile::tempdir().unwrap();
    let mut ca = certs::Ca::generate("Short-lived issuing CA").unwrap();
    let mut spec = certs::ClientSpec::org("Expires soon", Harness::agency_kbo_static());
    spec.not_after = time::OffsetDateTime::now_utc() + time::Duration::seconds(3);
    let leaf = ca.issue_client(&spec).unwrap();
    let (cas, crls) = (dir.path().join("ca.pem"), dir.path().join("crl.pem"));
    std::fs::write(&cas, ca.cert_pem()).unwrap();
    std::fs::write(&crls, ca.crl(&[], 1).unwrap()).unwrap();
    let crls = format!("[{:?}]", crls.to_str().unwrap());
    let h = Harness::with_overrides(&[
        ("PASSERELLE__TLS__CLIENT_CA", cas.to_str().unwrap()),
        ("PASSERELLE__TLS__CRLS", crls.as_str()),
    ])
    .await
    .unwrap();
    let client = MtlsClient::new(
        h.demo.gateway.data_addr,
        h.demo.pki.ca.cert_pem().as_bytes(),
        Some((leaf.cert_pem.as_bytes(), leaf.key_pem.as_bytes())),
        HttpVersion::Http2,
    )
    .unwrap();
    let mut conn = client.connect().await.unwrap();
    let v = vcode();
    assert_eq!(conn.send(association_request(&v)).await.unwrap().status, StatusCode::OK);
    let deadline = Instant::now() + Duration::from_secs(8);
    let ended = loop {
        match conn.send(association_request(&v)).await {
            Ok(a) if a.status == StatusCode::OK => {}
            Ok(a) => panic!("an answer other than data or the end: {} {}", a.status, a.text()),
            Err(_) => break Instant::now(),
        }
        assert!(Instant::now() < deadline, "the connection outlived its certificate");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let not_after = spec.not_after.unix_timestamp();
    let now = time::OffsetDateTime::now_utc().unix_timestamp();
    assert!(now >= not_after, "ended before the certificate expired");
    let _ = ended;
    assert_eq!(closed(&h, "data", "expired").await, 1);
}

/// Reproduction 2: the public listener cuts a header trickle after its header timeout and an
/// idle connection after its idle timeout; an mTLS data-plane connection that sends nothing
/// after the handshake is cut after the data plane's idle timeout.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn listeners_cut_trickles_and_idle_connections() {
    let h = Harness::with_overrides(&[
        ("PASSERELLE__CONNECTIONS__PUBLIC__HEADER_READ_TIMEOUT_MS", "1000"),
        ("PASSERELLE__CONNECTIONS__PUBLIC__IDLE_TIMEOUT_MS", "1500"),
        ("PASSERELLE__CONNECTIONS__DATA__IDLE_TIMEOUT_MS", "1500"),
    ])
    .await
    .unwrap();
    // A trickle: one header line every 400 ms, never the end of the head.
    let mut trickle = public_tls(&h, "127.0.0.1:0").await;
    trickle.write_all(b"GET /public/instruments HTTP/1.1\r\n").await.unwrap();
    let started = Instant::now();
    let cut = loop {
        if trickle.write_all(b"X-Slow: 1\r\n").await.is_err() {
            break started.elapsed();
        }
        let mut b = [0u8; 256];
        match tokio::time::timeout(Duration::from_millis(400), trickle.read(&mut b)).await {
            Ok(Ok(0) | Err(_)) => break started.elapsed(),
            Ok(Ok(_)) => break started.elapsed(), // an error answer, then the close
            Err(_) => {}
        }
        assert!(started.elapsed() < Duration::from_secs(6), "the trickle was never cut");
    };
    assert!(cut >= Duration::from_millis(900) && cut < Duration::from_secs(3), "trickle cut after {cut:?}");

    // An idle HTTP/2 connection, after one answered request. (An idle HTTP/1.1 connection
    // is cut sooner, by the header timeout, which also bounds the wait for the next request.)
    let ca = h.demo.pki.ca.cert_pem();
    let config = Arc::new(gateway::tls::client_config(ca.as_bytes(), None, &[b"h2"]).unwrap());
    let tcp = tokio::net::TcpStream::connect(h.demo.gateway.public_addr.unwrap()).await.unwrap();
    let name = rustls::pki_types::ServerName::try_from("localhost").unwrap().to_owned();
    let tls = tokio_rustls::TlsConnector::from(config).connect(name, tcp).await.unwrap();
    let (mut sender, conn) =
        hyper::client::conn::http2::handshake(hyper_util::rt::TokioExecutor::new(), hyper_util::rt::TokioIo::new(tls))
            .await
            .unwrap();
    let conn = tokio::spawn(conn);
    let req =
        http::Request::get("https://localhost/public/instruments").body(http_body_util::Empty::<Bytes>::new()).unwrap();
    let answer = sender.send_request(req).await.unwrap();
    assert_eq!(answer.status(), StatusCode::OK);
    drop(http_body_util::BodyExt::collect(answer.into_body()).await.unwrap());
    let quiet = Instant::now();
    tokio::time::timeout(Duration::from_secs(5), conn).await.expect("an idle HTTP/2 connection stayed open 5 s").ok();
    let lasted = quiet.elapsed();
    assert!(lasted >= Duration::from_millis(1400) && lasted < Duration::from_secs(3), "idle cut after {lasted:?}");
    assert!(closed(&h, "public", "idle").await >= 1);

    // The data plane: a handshake, then nothing.
    let mut silent = tests::raw_tls(&h, ASSOC_CALLER).await.unwrap();
    let quiet = Instant::now();
    let mut one = [0u8; 1];
    let r = tokio::time::timeout(Duration::from_secs(5), silent.read(&mut one)).await;
    assert!(matches!(r, Ok(Ok(0) | Err(_))), "a silent mTLS connection stayed open 5 s: {r:?}");
    let lasted = quiet.elapsed();
    assert!(lasted >= Duration::from_millis(1400) && lasted < Duration::from_secs(3), "silent cut after {lasted:?}");
    assert!(closed(&h, "data", "idle").await >= 1);
}

/// Reproduction 2, the flood: one address opening connection after connection on the public
/// listener is capped at its per-address limit, while a client from another address is served.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_connection_flood_from_one_address_is_capped() {
    let h = Harness::with_overrides(&[("PASSERELLE__CONNECTIONS__PUBLIC__MAX_PER_PEER", "4")]).await.unwrap();
    let mut held = Vec::new();
    let mut refused = 0;
    for _ in 0..20 {
        match public_tls_try(&h, "127.0.0.1:0").await {
            Some(t) => held.push(t),
            None => refused += 1,
        }
    }
    assert_eq!((held.len(), refused), (4, 16), "four held, the rest closed at accept");
    // Another address is still served while the flood holds its four.
    let mut good = public_tls(&h, "127.0.0.2:0").await;
    good.write_all(b"GET /public/instruments HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").await.unwrap();
    let mut answer = Vec::new();
    good.read_to_end(&mut answer).await.unwrap();
    assert!(answer.starts_with(b"HTTP/1.1 200"), "{}", String::from_utf8_lossy(&answer[..answer.len().min(200)]));
    assert_eq!(closed(&h, "public", "peer-limit").await, 16);
    // When the flood lets go, its address may connect again.
    drop(held);
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(public_tls_try(&h, "127.0.0.1:0").await.is_some());
}

/// Reproduction 3: a trust anchor with `pathlen:0` admits no intermediate, whatever
/// `tls.max_intermediates` allows.
#[tokio::test]
async fn a_trust_anchors_path_length_holds() {
    let dir = tempfile::tempdir().unwrap();
    let mut anchor = certs::Ca::generate("Anchor without intermediates").unwrap(); // pathlen:0
    let mut under = anchor.issue_intermediate("Intermediate it may not have").unwrap();
    let kbo = Harness::agency_kbo_static();
    let direct = anchor.issue_client(&certs::ClientSpec::org("Issued by the anchor", kbo)).unwrap();
    let below = under.issue_client(&certs::ClientSpec::org("Issued below it", kbo)).unwrap();
    let (cas, crls) = (dir.path().join("ca.pem"), dir.path().join("crls.pem"));
    std::fs::write(&cas, anchor.cert_pem()).unwrap();
    std::fs::write(&crls, format!("{}\n{}", anchor.crl(&[], 1).unwrap(), under.crl(&[], 1).unwrap())).unwrap();
    let crls = format!("[{:?}]", crls.to_str().unwrap());
    let h = Harness::with_overrides(&[
        ("PASSERELLE__TLS__CLIENT_CA", cas.to_str().unwrap()),
        ("PASSERELLE__TLS__CRLS", crls.as_str()),
        ("PASSERELLE__TLS__MAX_INTERMEDIATES", "2"),
    ])
    .await
    .unwrap();
    let client = |leaf: &certs::Issued, chain: &[&certs::Ca]| {
        let pem = std::iter::once(leaf.cert_pem.clone()).chain(chain.iter().map(|c| c.cert_pem())).collect::<Vec<_>>();
        MtlsClient::new(
            h.demo.gateway.data_addr,
            h.demo.pki.ca.cert_pem().as_bytes(),
            Some((pem.join("\n").as_bytes(), leaf.key_pem.as_bytes())),
            HttpVersion::Http1,
        )
        .unwrap()
    };
    let a = association(&client(&direct, &[]), &vcode(), &[]).await.unwrap();
    assert_eq!(a.status, StatusCode::OK, "{}", a.text());
    let refused = association(&client(&below, &[&under]), &vcode(), &[]).await;
    assert!(refused.is_err(), "an intermediate under a pathlen:0 anchor: {:?}", refused.map(|a| a.status));
}

async fn tls_over(
    tcp: tokio::net::TcpStream,
    ca: &str,
) -> Option<tokio_rustls::client::TlsStream<tokio::net::TcpStream>> {
    let config = Arc::new(gateway::tls::client_config(ca.as_bytes(), None, &[b"http/1.1"]).unwrap());
    let name = rustls::pki_types::ServerName::try_from("localhost").unwrap().to_owned();
    tokio::time::timeout(Duration::from_secs(5), tokio_rustls::TlsConnector::from(config).connect(name, tcp))
        .await
        .ok()?
        .ok()
}

/// A TLS connection to the public listener of `h`, from the address `from` (port 0: any).
async fn public_tls_try(h: &Harness, from: &str) -> Option<tokio_rustls::client::TlsStream<tokio::net::TcpStream>> {
    let sock = tokio::net::TcpSocket::new_v4().unwrap();
    sock.bind(from.parse().unwrap()).unwrap();
    let tcp = sock.connect(h.demo.gateway.public_addr.unwrap()).await.ok()?;
    tls_over(tcp, &h.demo.pki.ca.cert_pem()).await
}

async fn public_tls(h: &Harness, from: &str) -> tokio_rustls::client::TlsStream<tokio::net::TcpStream> {
    public_tls_try(h, from).await.expect("a TLS connection to the public listener")
}

/// Without a client certificate, curl itself hears TLS 1.3's `certificate_required` alert every
/// time (not "Connection reset": the gateway lets the alert out before it closes).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn curl_without_a_certificate_hears_certificate_required() {
    let h = Harness::start().await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let ca = dir.path().join("ca.pem");
    std::fs::write(&ca, h.demo.pki.ca.cert_pem()).unwrap();
    let url = format!("https://localhost:{}/associations/association", h.demo.gateway.data_addr.port());
    for round in 0..10 {
        let (ca, url) = (ca.clone(), url.clone());
        let out = tokio::task::spawn_blocking(move || {
            std::process::Command::new("curl")
                .args(["-sS", "--max-time", "5", "--cacert"])
                .arg(&ca)
                .arg(&url)
                .output()
                .expect("curl (scripts/test installs it)")
        })
        .await
        .unwrap();
        let said = String::from_utf8_lossy(&out.stderr);
        assert!(said.contains("certificate required"), "round {round}: curl said {said:?}");
    }
}
