//! Scale-out: gateway replicas sharing one PostgreSQL database (a throw-away cluster started
//! from Debian's server binaries; without them these tests say SKIPPED, and fail when
//! `PASSERELLE_REQUIRE_POSTGRES` is set, as in CI).

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{Method, StatusCode};
use tests::pg::{PgCluster, Replica};
use tests::{Harness, SIGEDIS_LEGAL_BASIS, person, send, sigedis};

async fn on_postgres(pg: &PgCluster, name: &str) -> Harness {
    let o = tests::pg::overrides(pg, name);
    let refs: Vec<(&str, &str)> = o.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    Harness::with_overrides(&refs).await.unwrap()
}

async fn post(client: &gateway::client::MtlsClient, path: &str, body: serde_json::Value) -> tests::Answer {
    send(client, Method::POST, path, &[("content-type", "application/json")], Bytes::from(body.to_string()))
        .await
        .unwrap()
}

/// Calls until `done` holds for an answer, or the deadline passes; returns the time it took
/// and how many calls were made.
async fn until<F, Fut>(deadline: Duration, mut call: F, done: impl Fn(&tests::Answer) -> bool) -> (Duration, usize)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = anyhow::Result<tests::Answer>>,
{
    let started = Instant::now();
    let mut calls = 0;
    loop {
        let a = call().await.unwrap();
        calls += 1;
        if done(&a) {
            return (started.elapsed(), calls);
        }
        assert!(started.elapsed() < deadline, "not within {deadline:?}; last answer: {} {}", a.status, a.text());
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_replicas_share_consents_suspensions_and_the_audit_trail() {
    let Some(pg) = PgCluster::start("two_replicas_share_consents_suspensions_and_the_audit_trail").unwrap() else {
        return;
    };
    let a = on_postgres(&pg, "a").await;
    let b = Replica::start(&a, "b").await.unwrap();
    let subject = person();
    let (bank_a, bank_b) = (a.client(tests::SIGEDIS_CALLER), b.client(&a, tests::SIGEDIS_CALLER));
    let mut calls = 0usize;

    // No consent yet: refused on both.
    for c in [&bank_a, &bank_b] {
        assert_eq!(sigedis(c, &subject, &[]).await.unwrap().code(), Some("CONSENT_MISSING"));
        calls += 1;
    }

    // Given through replica A's control plane; replica B answers with data.
    let given =
        post(&a.control_client("citizen-portal"), "/consents", tests::sigedis_consent_body(&subject).unwrap()).await;
    assert_eq!(given.status, StatusCode::CREATED, "{}", given.text());
    let id = given.json().unwrap()["id"].as_str().unwrap().to_owned();
    let (took, n) =
        until(Duration::from_secs(1), || sigedis(&bank_b, &subject, &[]), |a| a.status == StatusCode::OK).await;
    calls += n;
    eprintln!("consent given on A, answered on B after {took:?}");
    assert_eq!(sigedis(&bank_a, &subject, &[]).await.unwrap().status, StatusCode::OK);
    calls += 1;

    // Revoked through A: refused by B within 1 second.
    let revoked =
        post(&a.control_client("citizen-portal"), &format!("/consents/{id}/revoke"), serde_json::json!({})).await;
    assert_eq!(revoked.status, StatusCode::OK, "{}", revoked.text());
    let (took, n) =
        until(Duration::from_secs(1), || sigedis(&bank_b, &subject, &[]), |a| a.code() == Some("CONSENT_REVOKED"))
            .await;
    calls += n;
    eprintln!("consent revoked on A, refused on B after {took:?}");
    assert!(took < Duration::from_secs(1));

    // The flow suspended by its data owner through B: suspended on A.
    let suspended = post(
        &b.control_client(&a, "sigedis"),
        &format!("/instruments/{}/transitions", SIGEDIS_LEGAL_BASIS.replace('/', "%2F")),
        serde_json::json!({ "to": "suspended", "reason": "replica test" }),
    )
    .await;
    assert_eq!(suspended.status, StatusCode::OK, "{}", suspended.text());
    let (took, n) =
        until(Duration::from_secs(1), || sigedis(&bank_a, &subject, &[]), |a| a.code() == Some("FLOW_SUSPENDED")).await;
    calls += n;
    eprintln!("flow suspended on B, refused on A after {took:?}");
    assert_eq!(a.demo.gateway.policy.version(), b.gateway.policy.version());

    // The citizen's report, asked on A, lists the calls made through both replicas.
    let portal = a.control_client("citizen-portal");

    let mut last = serde_json::Value::Null;
    let deadline = Instant::now() + Duration::from_secs(5);
    while Instant::now() < deadline {
        let r = send(&portal, Method::GET, "/audit/report", &[("x-subject", &subject)], Bytes::new()).await.unwrap();
        assert_eq!(r.status, StatusCode::OK, "{}", r.text());
        last = r.json().unwrap();
        if last["count"].as_u64() == Some(calls as u64) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(last["count"].as_u64(), Some(calls as u64), "every call through A and B: {last}");

    // An auditor's query on B returns records of both chains, each naming its replica.
    let auditor = b.control_client(&a, "admin");
    let q = post(
        &auditor,
        "/audit/queries",
        serde_json::json!({
            "subject": subject,
            "justification": { "case_reference": "T-1", "legal_ground": "art. 17", "requested_by": "test" },
        }),
    )
    .await;
    assert_eq!(q.status, StatusCode::OK, "{}", q.text());
    let q = q.json().unwrap();
    let replicas: std::collections::BTreeSet<&str> =
        q["records"].as_array().unwrap().iter().filter_map(|r| r["replica"].as_str()).collect();
    assert_eq!(replicas.into_iter().collect::<Vec<_>>(), ["a", "b"], "{q}");

    // Both chains verify, each on its own; the CLI finds both under the audit directory.
    let (b_dir, b_key, b_gw) = (b.config.audit.dir.clone(), b.config.audit.signing_key.clone(), b.gateway);
    b_gw.shutdown().await;
    let (cfg, _keep) = a.stop().await;
    for (dir, key) in [(&cfg.audit.dir, &cfg.audit.signing_key), (&b_dir, &b_key)] {
        let key = gateway::audit::trail::signing_public_key(key).unwrap();
        let r = gateway::audit::verify::verify_dir(dir, &key).unwrap();
        assert!(r.problem.is_none() && r.records > 0, "{}: {:?}", dir.display(), r.problem);
    }
    let chains = gateway::audit::verify::chains(cfg.audit.dir.parent().unwrap()).unwrap();
    let names: Vec<_> = chains.iter().map(|(n, _)| n.clone().unwrap()).collect();
    assert_eq!(names, ["a", "b"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killing_postgres_fails_closed_and_recovers() {
    let Some(pg) = PgCluster::start("killing_postgres_fails_closed_and_recovers").unwrap() else { return };
    let h = Arc::new(on_postgres(&pg, "a").await);
    let vcode = tests::vcode();

    // A client that calls without pause and records every answer.
    let stop = Arc::new(AtomicBool::new(false));
    let load = {
        let (h, stop, vcode) = (h.clone(), stop.clone(), vcode.clone());
        tokio::spawn(async move {
            let client = h.client(tests::ASSOC_CALLER);
            let mut seen = Vec::new();
            while !stop.load(Ordering::Relaxed) {
                let a = tests::association(&client, &vcode, &[]).await.unwrap();
                let rid = a.headers.get("x-request-id").and_then(|v| v.to_str().ok()).unwrap_or("").to_owned();
                seen.push((Instant::now(), a.status, a.code().map(str::to_owned), rid));
            }
            seen
        })
    };
    tokio::time::sleep(Duration::from_millis(500)).await;
    let killed = Instant::now();
    pg.kill().unwrap();
    tokio::time::sleep(Duration::from_secs(1)).await;
    // A change on the control plane meanwhile is refused with the same code, and not made.
    let consent = tests::sigedis_consent_body(&person()).unwrap();
    let refused = post(&h.control_client("citizen-portal"), "/consents", consent).await;
    assert_eq!((refused.status, refused.code()), (StatusCode::SERVICE_UNAVAILABLE, Some("STORE_UNAVAILABLE")));
    tokio::time::sleep(Duration::from_secs(1)).await;
    let restarted = Instant::now();
    pg.start_again().unwrap();
    // Until the replica has re-read the store and answers again.
    let client = h.client(tests::ASSOC_CALLER);
    let (took, _) =
        until(Duration::from_secs(15), || tests::association(&client, &vcode, &[]), |a| a.status == StatusCode::OK)
            .await;
    eprintln!("answering again {took:?} after PostgreSQL came back");
    tokio::time::sleep(Duration::from_millis(300)).await;
    stop.store(true, Ordering::Relaxed);
    let seen = load.await.unwrap();

    let before = seen.iter().filter(|s| s.0 < killed).count();
    let refused: Vec<_> = seen.iter().filter(|s| s.2.as_deref() == Some("STORE_UNAVAILABLE")).collect();
    let down = seen.iter().filter(|s| s.0 > killed + Duration::from_millis(500) && s.0 < restarted).collect::<Vec<_>>();
    eprintln!(
        "{} answers: {before} before the kill, {} STORE_UNAVAILABLE, {} while PostgreSQL was down",
        seen.len(),
        refused.len(),
        down.len()
    );
    assert!(before > 0 && !refused.is_empty(), "the outage was noticed");
    for s in &seen {
        assert!(
            s.1 == StatusCode::OK
                || (s.1 == StatusCode::SERVICE_UNAVAILABLE && s.2.as_deref() == Some("STORE_UNAVAILABLE")),
            "only data or STORE_UNAVAILABLE: {s:?}"
        );
    }
    assert!(!down.is_empty() && down.iter().all(|s| s.1 == StatusCode::SERVICE_UNAVAILABLE), "fail closed: {down:?}");
    assert!(seen.last().unwrap().1 == StatusCode::OK, "recovered");

    // The index catches up with everything the trail took meanwhile.
    let trail_last = h.demo.gateway.audit.status.last_seq.load(Ordering::Acquire);
    let pg_store = gateway::store::postgres::PgStore::open(&pg.url(), "a", Duration::from_secs(5), None).unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    let indexed = loop {
        let i = gateway::audit::index::AuditIndex::audit_indexed_seq(&pg_store).unwrap();
        if i >= trail_last || Instant::now() > deadline {
            break i;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert!(indexed >= trail_last, "index at {indexed}, trail at {trail_last}");
    drop(pg_store);

    // Every answer, data or refusal, has its durable record; the chain verifies.
    let h = Arc::try_unwrap(h).unwrap();
    assert!(h.demo.gateway.consent.of_subject(&person()).unwrap().is_empty(), "the refused consent was not made");
    let (cfg, _keep) = h.stop().await;
    let records = gateway::audit::verify::read_records(&cfg.audit.dir).unwrap();
    let ids: std::collections::HashSet<&str> = records.iter().map(|r| r.record.request_id.as_str()).collect();
    let missing = seen.iter().filter(|s| !ids.contains(s.3.as_str())).count();
    assert_eq!(missing, 0, "answers without a record");
    let key = gateway::audit::trail::signing_public_key(&cfg.audit.signing_key).unwrap();
    let r = gateway::audit::verify::verify_dir(&cfg.audit.dir, &key).unwrap();
    assert!(r.problem.is_none(), "{:?}", r.problem);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replicas_reach_the_database_over_tls_only() {
    // The database's own PKI: a CA and a server certificate for 127.0.0.1.
    let db_pki = certs::DevPki::generate(&[]).unwrap();
    let Some(pg) = PgCluster::start_tls(
        "replicas_reach_the_database_over_tls_only",
        &db_pki.server.cert_pem,
        &db_pki.server.key_pem,
    )
    .unwrap() else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let ca = dir.path().join("db-ca.pem");
    std::fs::write(&ca, db_pki.ca.cert_pem()).unwrap();
    let mut o = tests::pg::overrides(&pg, "a");
    o.push(("PASSERELLE__STORE__TLS__CA".into(), ca.display().to_string()));
    let refs: Vec<(&str, &str)> = o.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    let h = Harness::with_overrides(&refs).await.unwrap();
    let a = tests::association(&h.client(tests::ASSOC_CALLER), &tests::vcode(), &[]).await.unwrap();
    assert_eq!(a.status, StatusCode::OK, "{}", a.text());
    // Every connection of the gateway (store, indexer, notifications) is TLS. The indexer opens
    // its connection with its first write, after the call above: wait for it.
    let deadline = Instant::now() + Duration::from_secs(5);
    let seen = loop {
        let seen = pg
            .sql(
                "SELECT count(*) || ' ' || bool_and(s.ssl) FROM pg_stat_ssl s JOIN pg_stat_activity a USING (pid) \
                 WHERE a.application_name LIKE 'passerelle%'",
            )
            .unwrap();
        if seen.starts_with("3 ") || Instant::now() > deadline {
            break seen;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert_eq!(seen, "3 true", "store, index and notification connections, all over TLS");

    // Without [store.tls] the database refuses the replica (no plain TCP) ...
    let mut plain = h.demo.config.clone();
    plain.store.tls = None;
    let refused = Replica::start_with("b", plain).await;
    assert!(refused.is_err(), "a replica without TLS was let in");
    // ... and with a CA that did not issue the database's certificate, the replica refuses it.
    let other = certs::DevPki::generate(&[]).unwrap();
    let wrong_ca = dir.path().join("other-ca.pem");
    std::fs::write(&wrong_ca, other.ca.cert_pem()).unwrap();
    let mut wrong = h.demo.config.clone();
    wrong.store.tls.as_mut().unwrap().ca = wrong_ca;
    let refused = Replica::start_with("c", wrong).await.map(|_| ()).unwrap_err();
    assert!(format!("{refused:#}").contains("PostgreSQL"), "{refused:#}");
    h.stop().await;
}

/// The a-posteriori control on a shared store: an inquiry filed on one replica is advised on
/// the other and read on the first; a second advice on either replica is refused.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_inquiry_moves_between_replicas() {
    use serde_json::json;
    use tests::{PROSECUTOR, PROSECUTOR_KBO};
    let Some(pg) = PgCluster::start("an_inquiry_moves_between_replicas").unwrap() else {
        return;
    };
    let a = on_postgres(&pg, "a").await;
    let b = Replica::start(&a, "b").await.unwrap();
    let subject = person();
    sigedis(&a.client(tests::SIGEDIS_CALLER), &subject, &[("x-request-id", "on-a")]).await.unwrap();
    sigedis(&b.client(&a, tests::SIGEDIS_CALLER), &subject, &[("x-request-id", "on-b")]).await.unwrap();
    let org = json!({ "kbo": PROSECUTOR_KBO, "name": "Public prosecutor's office (synthetic)", "kind": "external-authority" });
    assert_eq!(post(&a.control_client("admin"), "/organisations", org).await.status, StatusCode::CREATED);
    let designation = json!({
        "organisation": PROSECUTOR_KBO, "role": "investigating-judge", "owner": "0872000108",
        "designation": "Juge d'instruction, Bruxelles", "valid_until": "2099-12-31"
    });
    // The policy change reaches replica b through the store's notifications.
    let (_, _) = until(
        Duration::from_secs(10),
        || {
            let (c, d) = (b.control_client(&a, "sigedis"), designation.clone());
            async move { Ok(post(&c, "/audit/requesters", d).await) }
        },
        |ans| ans.status == StatusCode::CREATED,
    )
    .await;
    let again = post(&a.control_client("sigedis"), "/audit/requesters", designation).await;
    assert_eq!(again.code(), Some("ALREADY_EXISTS"), "the designation made on b is seen on a");
    let filed = post(
        &a.control_client(PROSECUTOR),
        "/audit/requests",
        json!({ "owner": "0872000108", "subject": subject, "justification": {
            "case_reference": "IS 26/123", "legal_ground": "Code of criminal procedure, art. 88bis",
            "requested_by": "Investigating judge, Brussels" } }),
    )
    .await;
    assert_eq!(filed.status, StatusCode::CREATED, "{}", filed.text());
    let id = filed.json().unwrap()["id"].as_str().unwrap().to_owned();
    let advice = format!("/audit/requests/{id}/advice");
    let favourable = json!({ "favourable": true, "reason": "warrant seen" });
    let a1 = post(&b.control_client(&a, "sigedis"), &advice, favourable.clone()).await;
    assert_eq!(a1.status, StatusCode::OK, "{}", a1.text());
    let a2 = post(&a.control_client("sigedis"), &advice, favourable).await;
    assert_eq!(a2.code(), Some("TRANSITION_NOT_ALLOWED"), "advised once, whichever replica");
    let read =
        send(&a.control_client(PROSECUTOR), Method::GET, &format!("/audit/requests/{id}/results"), &[], Bytes::new())
            .await
            .unwrap();
    assert_eq!(read.status, StatusCode::OK, "{}", read.text());
    let doc = read.json().unwrap();
    let mut ids: Vec<&str> =
        doc["records"].as_array().unwrap().iter().map(|r| r["request_id"].as_str().unwrap()).collect();
    ids.sort_unstable();
    assert_eq!(ids, ["on-a", "on-b"], "both replicas' calls about the subject");
}

/// A service registered through one replica is routed by the other, without restart: the
/// registration is a policy version, which every replica installs, rebuilding its registered
/// routes before the snapshot swap.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_service_registered_on_one_replica_is_served_by_the_other() {
    let Some(pg) = PgCluster::start("a_service_registered_on_one_replica_is_served_by_the_other").unwrap() else {
        return;
    };
    let a = on_postgres(&pg, "a").await;
    let b = Replica::start(&a, "b").await.unwrap();
    let history = || {
        let body = Bytes::from(adapters::div::sandbox::history_by_plate(&gateway::demo::div_vehicle().unwrap().0));
        let headers = [("x-legal-basis", "DIV/CONV/2023/0042"), ("x-purpose", "INSURANCE_CLAIM")];
        let client = b.client(&a, "insurer");
        async move { send(&client, Method::POST, "/div/history", &headers, body).await }
    };
    assert_eq!(history().await.unwrap().code(), Some("SERVICE_UNKNOWN"));
    let registered = post(
        &a.control_client("div"),
        "/services",
        adapters::div::sandbox::history_registration(adapters::div::sandbox::HISTORY_XSD),
    )
    .await;
    assert_eq!(registered.status, StatusCode::CREATED, "{}", registered.text());
    // Routed on B: the insurer's convention does not grant it, so the policy refuses it.
    let (took, _) = until(Duration::from_secs(1), history, |a| a.code() == Some("LEGAL_BASIS_NOT_APPLICABLE")).await;
    eprintln!("service registered on A, routed on B after {took:?}");
    let wsdl = send(&b.client(&a, "insurer"), Method::GET, "/div/history?wsdl", &[], Bytes::new()).await.unwrap();
    assert_eq!(wsdl.status, StatusCode::OK, "{}", wsdl.text());
    assert!(wsdl.text().contains("GetVehicleHistoryRequest"));
}

/// A replica whose notifications were cut reads, when it reconnects, only the consents written
/// since the last feed number it saw — not every consent again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reconnecting_replica_reads_only_the_consents_it_missed() {
    use std::sync::atomic::Ordering::Relaxed;
    let Some(pg) = PgCluster::start("a_reconnecting_replica_reads_only_the_consents_it_missed").unwrap() else {
        return;
    };
    let a = on_postgres(&pg, "a").await;
    let b = Replica::start(&a, "b").await.unwrap();
    let portal = a.control_client("citizen-portal");
    let people: Vec<String> = adapters::sigedis::sandbox::Register::persons()
        .iter()
        .take(8)
        .map(|n| {
            let mut d = [0u8; 11];
            n.digits(&mut d).to_owned()
        })
        .collect();
    // Five consents B follows by notification.
    for p in &people[..5] {
        let given = post(&portal, "/consents", tests::sigedis_consent_body(p).unwrap()).await;
        assert_eq!(given.status, StatusCode::CREATED, "{}", given.text());
    }
    let bank_b = b.client(&a, tests::SIGEDIS_CALLER);
    until(Duration::from_secs(1), || sigedis(&bank_b, &people[4], &[]), |r| r.status == StatusCode::OK).await;
    let sync = b.gateway.sync.clone().unwrap();
    assert_eq!(sync.full_reads.load(Relaxed), 1, "every consent was read once, at the first connection");
    // B's follower loses its connection; three consents are given meanwhile.
    let cut = pg
        .sql("SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity WHERE application_name = 'passerelle-follow-b'")
        .unwrap();
    assert_eq!(cut.trim(), "1", "B's follower connection was found and ended");
    for p in &people[5..] {
        let given = post(&portal, "/consents", tests::sigedis_consent_body(p).unwrap()).await;
        assert_eq!(given.status, StatusCode::CREATED, "{}", given.text());
    }
    // B answers for all three once it has caught up — from the feed, not by reading everything.
    for p in &people[5..] {
        until(Duration::from_secs(5), || sigedis(&bank_b, p, &[]), |r| r.status == StatusCode::OK).await;
    }
    assert_eq!(sync.full_reads.load(Relaxed), 1, "no second read of every consent");
    let caught_up = sync.caught_up.load(Relaxed);
    assert!(caught_up <= 3, "the catch-up read only what was written while B was away: {caught_up}");
    eprintln!("after the reconnection B read {caught_up} consents from the feed (8 in the store)");

    // An import writes only the consents the database lacks, never over one revoked since.
    let registry = a.demo.gateway.consent.clone();
    let extra: Vec<_> = adapters::sigedis::sandbox::Register::persons()[8..10]
        .iter()
        .enumerate()
        .map(|(i, n)| {
            let mut d = [0u8; 11];
            gateway::consent::sample(900 + i as u128, n.digits(&mut d), "0456123494")
        })
        .collect();
    let r = registry.clone();
    let (first, again, kept, events) = tokio::task::spawn_blocking(move || {
        let first = r.import(&extra, "0207000176").unwrap();
        r.revoke(&extra[0].id, 1_800_000_000_000, "0316222275").unwrap();
        let again = r.import(&extra, "0207000176").unwrap();
        let kept = r.store().get(&extra[0].id).unwrap().unwrap();
        (first, again, kept, r.store().history(&extra[0].id).unwrap())
    })
    .await
    .unwrap();
    assert_eq!((first, again), (2, 0), "written once");
    assert!(kept.revoked_at_ms.is_some(), "the revocation stands");
    let names: Vec<&str> = events.iter().map(|e| e["event"].as_str().unwrap()).collect();
    assert_eq!(names, ["imported", "revoked"]);
}
