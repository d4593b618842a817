//! Graceful shutdown: SIGTERM while calls are in flight (held by a slow source). Every call in
//! flight completes with its data, each has a durable audit record, the trail verifies, and the
//! process exits 0.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::time::Duration;

use bytes::Bytes;
use gateway::client;
use gateway::demo::{ASSOC_CALLER, ASSOC_LEGAL_BASIS, ASSOC_PURPOSE};
use http::Method;

const IN_FLIGHT: usize = 40;
// Each answer is held 800 ms by the source: SIGTERM arrives while all 40 wait for it.

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_lets_calls_in_flight_finish_with_their_records() {
    let site = support::Site::new().await;
    // A slow association register: each answer takes 800 ms.
    let register = std::sync::Arc::new(adapters::associations::sandbox::Register::generate());
    let vcode = gateway::demo::association().unwrap();
    let doc = register.get(vcode).unwrap().doc.clone();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let arrived = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let seen = arrived.clone();
    let slow = adapters::sandbox::serve(listener, move |_| {
        let doc = doc.clone();
        seen.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        async move {
            tokio::time::sleep(Duration::from_millis(800)).await;
            adapters::sandbox::json(http::StatusCode::OK, &doc)
        }
    })
    .unwrap();
    let text = std::fs::read_to_string(&site.config).unwrap();
    let fast = site.sandboxes[1].url();
    assert!(text.contains(&fast));
    std::fs::write(&site.config, text.replace(&fast, &slow.url())).unwrap();

    let mut child = site.start("gateway.log").await;
    let agency = site.client(ASSOC_CALLER, false);
    let v = vcode.to_string();
    let calls: Vec<_> = (0..IN_FLIGHT)
        .map(|i| {
            let (agency, v) = (agency.clone(), v.clone());
            tokio::spawn(async move {
                let rid = format!("inflight-{i}");
                let h = [
                    ("x-legal-basis", ASSOC_LEGAL_BASIS),
                    ("x-purpose", ASSOC_PURPOSE),
                    ("x-subject", v.as_str()),
                    ("x-request-id", rid.as_str()),
                ];
                let req = client::request(Method::GET, "/associations/association", &h, Bytes::new()).unwrap();
                agency.send(req).await
            })
        })
        .collect();
    // Once every call has reached the slow source (so all are in flight), ask the gateway to stop.
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    while arrived.load(std::sync::atomic::Ordering::SeqCst) < IN_FLIGHT {
        assert!(std::time::Instant::now() < deadline, "the calls did not all reach the source");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let status = tokio::task::spawn_blocking(move || support::terminate(&mut child)).await.unwrap();
    let mut answered = 0;
    for c in calls {
        let a = c.await.unwrap().expect("a call in flight was cut off");
        assert_eq!(a.status, 200, "{}", a.text());
        answered += 1;
    }
    assert_eq!(status.code(), Some(0), "exit status after SIGTERM");
    assert_eq!(answered, IN_FLIGHT);
    // New connections are refused once it is gone.
    assert!(tokio::net::TcpStream::connect(("127.0.0.1", site.data_port)).await.is_err());

    let audit = site.path().join("audit");
    let report = gateway::audit::verify::verify_dir(&audit, &site.audit_key()).unwrap();
    assert_eq!(report.problem, None);
    let records = gateway::audit::verify::read_records(&audit).unwrap();
    for i in 0..IN_FLIGHT {
        let rid = format!("inflight-{i}");
        let r = records.iter().find(|r| r.record.request_id == rid).unwrap_or_else(|| panic!("no record for {rid}"));
        assert_eq!(r.record.status, 200);
    }
    slow.abort();
}
