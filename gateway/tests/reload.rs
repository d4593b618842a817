//! Live reload of the real `passerelle serve` process: under concurrent load (keep-alive
//! connections and a new connection per call), the server certificate is rotated and a client
//! is added to the CRL, then SIGHUP. No call fails, new handshakes get the new certificate, the
//! revoked client is refused at the handshake, and a broken certificate file makes a reload
//! fail without changing anything.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use gateway::client::MtlsClient;
use gateway::demo::{ASSOC_CALLER, ASSOC_LEGAL_BASIS, ASSOC_PURPOSE};
use http::Method;
use rustls_pki_types::CertificateDer;
use rustls_pki_types::pem::PemObject;
use support::Site;

fn der(pem: &str) -> Vec<u8> {
    CertificateDer::from_pem_slice(pem.as_bytes()).unwrap().to_vec()
}

/// The certificate the data plane presents to a new handshake.
async fn served_certificate(site: &Site) -> Vec<u8> {
    let issued = site.pki.client(ASSOC_CALLER).unwrap();
    let config = gateway::tls::client_config(
        site.pki.ca.cert_pem().as_bytes(),
        Some((issued.cert_pem.as_bytes(), issued.key_pem.as_bytes())),
        &[b"http/1.1"],
    )
    .unwrap();
    let tcp = tokio::net::TcpStream::connect(("127.0.0.1", site.data_port)).await.unwrap();
    let name = rustls_pki_types::ServerName::try_from("localhost").unwrap();
    let tls = tokio_rustls::TlsConnector::from(Arc::new(config)).connect(name, tcp).await.unwrap();
    tls.get_ref().1.peer_certificates().unwrap()[0].to_vec()
}

fn association_request(vcode: &str) -> http::Request<http_body_util::Full<Bytes>> {
    let headers = [("x-legal-basis", ASSOC_LEGAL_BASIS), ("x-purpose", ASSOC_PURPOSE), ("x-subject", vcode)];
    gateway::client::request(Method::GET, "/associations/association", &headers, Bytes::new()).unwrap()
}

fn write_atomically(path: &std::path::Path, text: &str) {
    let tmp = path.with_extension("new");
    std::fs::write(&tmp, text).unwrap();
    std::fs::rename(&tmp, path).unwrap();
}

async fn metrics(site: &Site) -> String {
    let mut tcp = tokio::net::TcpStream::connect(("127.0.0.1", site.ops_port)).await.unwrap();
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    tcp.write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").await.unwrap();
    let mut out = String::new();
    tcp.read_to_string(&mut out).await.unwrap();
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sighup_rotates_the_certificate_and_revokes_a_client_under_load() {
    let mut site = Site::new().await;
    let mut gw = site.start("reload.log").await;
    let vcode = gateway::demo::association().unwrap().to_string();
    assert_eq!(served_certificate(&site).await, der(&site.pki.server.cert_pem));
    let agency_b = site.client("agency-b", false);
    // Agency B's certificate is accepted (the answer itself is a refusal: no grant).
    let a = agency_b.send(association_request(&vcode)).await.unwrap();
    assert_eq!(a.code(), Some("LEGAL_BASIS_NOT_APPLICABLE"), "{}", a.text());

    // Load: two keep-alive connections and one new connection (full handshake) per call.
    let stop = Arc::new(AtomicBool::new(false));
    let (ok, handshakes) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
    let failures = Arc::new(std::sync::Mutex::new(Vec::<String>::new()));
    let mut tasks = Vec::new();
    for fresh in [false, false, true] {
        let client: MtlsClient = site.client(ASSOC_CALLER, false);
        let (stop, ok, handshakes, failures, vcode) =
            (stop.clone(), ok.clone(), handshakes.clone(), failures.clone(), vcode.clone());
        tasks.push(tokio::spawn(async move {
            let mut conn = client.connect().await.unwrap();
            while !stop.load(Ordering::Relaxed) {
                let answer = if fresh {
                    handshakes.fetch_add(1, Ordering::Relaxed);
                    client.send(association_request(&vcode)).await
                } else {
                    conn.send(association_request(&vcode)).await
                };
                match answer {
                    Ok(a) if a.status == 200 => {
                        ok.fetch_add(1, Ordering::Relaxed);
                    }
                    Ok(a) => failures.lock().unwrap().push(format!("{} {}", a.status, a.text())),
                    Err(e) => failures.lock().unwrap().push(format!("{e:#}")),
                }
            }
        }));
    }
    // However slow the machine, the load runs on both sides of the reload: wait for progress
    // rather than for a time.
    let progress = |ok: Arc<AtomicUsize>, handshakes: Arc<AtomicUsize>, calls: usize, fresh: usize| async move {
        let deadline = Instant::now() + Duration::from_secs(60);
        while ok.load(Ordering::Relaxed) < calls || handshakes.load(Ordering::Relaxed) < fresh {
            assert!(Instant::now() < deadline, "the load made no progress");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    };
    progress(ok.clone(), handshakes.clone(), 20, 3).await;

    // Rotate the server certificate and revoke agency B, as an operator would: new files, SIGHUP.
    let pki = site.path().join("pki");
    let new_server = site.pki.ca.issue_server(&["localhost", "127.0.0.1", "::1"]).unwrap();
    let mut revoked: Vec<&[u8]> =
        site.pki.clients.iter().filter(|(c, _)| c.revoked).map(|(_, i)| i.serial.as_slice()).collect();
    revoked.push(&site.pki.client("agency-b").unwrap().serial);
    let crl = site.pki.ca.crl(&revoked, 2).unwrap();
    write_atomically(&pki.join("server.key"), &new_server.key_pem);
    write_atomically(&pki.join("server.pem"), &new_server.cert_pem);
    write_atomically(&pki.join("crl.pem"), &crl);
    let hup = std::process::Command::new("kill").args(["-HUP", &gw.id().to_string()]).status().unwrap();
    assert!(hup.success());
    let deadline = Instant::now() + Duration::from_secs(10);
    while served_certificate(&site).await != der(&new_server.cert_pem) {
        assert!(Instant::now() < deadline, "new handshakes still get the old certificate");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // The revoked client is refused at the handshake: no HTTP answer at all.
    let refused = site.client("agency-b", false).send(association_request(&vcode)).await;
    assert!(refused.is_err(), "a revoked client got an answer: {:?}", refused.map(|a| a.status));
    let (after, fresh_after) = (ok.load(Ordering::Relaxed), handshakes.load(Ordering::Relaxed));
    progress(ok.clone(), handshakes.clone(), after + 20, fresh_after + 3).await;
    stop.store(true, Ordering::Relaxed);
    for t in tasks {
        t.await.unwrap();
    }
    let failures = failures.lock().unwrap().clone();
    let (total, fresh) = (ok.load(Ordering::Relaxed), handshakes.load(Ordering::Relaxed));
    assert!(failures.is_empty(), "{} calls failed, e.g. {:?}", failures.len(), &failures[..failures.len().min(3)]);
    eprintln!("reload under load: {total} calls ({fresh} on new connections), none failed");

    // Counted on the operations listener.
    let m = metrics(&site).await;
    assert!(m.contains("passerelle_reloads_total{outcome=\"ok\"} 1"), "{m}");
    assert!(m.contains("passerelle_tls_handshake_failures_total{listener=\"data\",reason=\"revoked\"} 1"), "{m}");

    // A broken certificate file: the reload fails (control plane), nothing changes.
    std::fs::write(pki.join("server.pem"), "not a certificate").unwrap();
    let admin = site.client("admin", true);
    let req = gateway::client::request(Method::POST, "/reload", &[], Bytes::new()).unwrap();
    let a = admin.send(req).await.unwrap();
    assert_eq!(a.code(), Some("RELOAD_FAILED"), "{}", a.text());
    assert!(a.text().contains("server.pem"), "{}", a.text());
    assert_eq!(served_certificate(&site).await, der(&new_server.cert_pem));
    let a = site.client(ASSOC_CALLER, false).send(association_request(&vcode)).await.unwrap();
    assert_eq!(a.status, 200);
    assert!(support::terminate(&mut gw).success());
}
