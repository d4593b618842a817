//! Crash test: the `passerelle` process is killed with SIGKILL at random moments under
//! concurrent load, 20 times, and restarted on the same directory each time. A client records
//! every answer it got. Afterwards every answer — above all every answer that carried data — has
//! its durable audit record, and the whole trail verifies.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::collections::HashSet;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http::Method;
use support::Site;

const ROUNDS: usize = 20;
const CLIENTS: usize = 8;

struct Answer {
    request_id: String,
    status: u16,
    data: bool,
}

/// `text` without the terminal colour sequences (`ESC [ … m`) of the gateway's log.
fn without_colours(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut parts = text.split('\x1b');
    out.extend(parts.next());
    for p in parts {
        out.push_str(p.split_once('m').map_or(p, |(_, rest)| rest));
    }
    out
}

/// A small deterministic generator for the kill moments.
fn next(seed: &mut u64) -> u64 {
    *seed = seed.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
    *seed >> 33
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_under_load_loses_no_record() {
    let site = Site::new().await;
    let dir = site.path();
    let client = site.client("agency-a", false);
    let vcode = gateway::demo::association().unwrap().to_string();
    let answers: Arc<Mutex<Vec<Answer>>> = Arc::default();
    let mut seed = 0x5EED_u64
        ^ std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_nanos() as u64);
    let mut torn_repairs = 0;
    let mut torn_bytes = 0u64;
    let mut prepared_segments = 0;

    for round in 0..=ROUNDS {
        let log = format!("round-{round}.log");
        // Small segments, so that rotations — into segments prepared in advance, filled in
        // place — happen throughout the kills.
        let mut child = site
            .start_with(
                &log,
                &[("PASSERELLE__AUDIT__SEGMENT_BYTES", "262144"), ("RUST_LOG", "info,passerelle::audit_index=debug")],
            )
            .await;
        if round == ROUNDS {
            // The last start only recovers; then a clean stop.
            let code = support::terminate(&mut child);
            assert!(code.success(), "graceful stop exited with {code}");
        } else {
            let stop = Arc::new(AtomicBool::new(false));
            let mut tasks = Vec::new();
            for c in 0..CLIENTS {
                let (client, answers, stop, vcode) = (client.clone(), answers.clone(), stop.clone(), vcode.clone());
                tasks.push(tokio::spawn(async move {
                    let Ok(mut conn) = client.connect().await else { return };
                    for n in 0.. {
                        if stop.load(Ordering::Relaxed) {
                            return;
                        }
                        let id = format!("r{round}-c{c}-{n}");
                        let headers = [
                            ("x-legal-basis", gateway::demo::ASSOC_LEGAL_BASIS),
                            ("x-purpose", gateway::demo::ASSOC_PURPOSE),
                            ("x-subject", vcode.as_str()),
                            ("x-request-id", id.as_str()),
                        ];
                        let req =
                            gateway::client::request(Method::GET, "/associations/association", &headers, Bytes::new())
                                .unwrap();
                        match tokio::time::timeout(Duration::from_secs(5), conn.send(req)).await {
                            Ok(Ok(a)) => {
                                let data = a.status == 200 && a.text().contains(&vcode);
                                answers.lock().unwrap().push(Answer {
                                    request_id: id,
                                    status: a.status.as_u16(),
                                    data,
                                });
                            }
                            // The gateway died under us: whatever was not answered does not count.
                            _ => return,
                        }
                    }
                }));
            }
            let after = Duration::from_millis(150 + next(&mut seed) % 550);
            tokio::time::sleep(after).await;
            support::kill_9(&mut child);
            stop.store(true, Ordering::Relaxed);
            for t in tasks {
                let _ = tokio::time::timeout(Duration::from_secs(10), t).await;
            }
        }
        let text = std::fs::read_to_string(dir.join(&log)).unwrap();
        // Not asserted: the segment is prepared at idle priority, which a busy machine may
        // starve (the rotation then creates the segment the plain way).
        prepared_segments += without_colours(&text).matches("prepared=true").count();
        if round > 0 {
            // What the restart found and repaired after the previous kill.
            if let Some(n) = text
                .split("torn_bytes=")
                .nth(1)
                .and_then(|r| r.split(|c: char| !c.is_ascii_digit()).next())
                .and_then(|d| d.parse::<u64>().ok())
                && n > 0
            {
                torn_repairs += 1;
                torn_bytes += n;
            }
        }
    }

    let audit = dir.join("audit");
    let report = gateway::audit::verify::verify_dir(&audit, &site.audit_key()).unwrap();
    assert_eq!(report.problem, None, "the trail must verify after {ROUNDS} kills");
    // And as a verifier written from docs/audit-format.md alone reads it: the torn tails the
    // restarts moved aside are no part of it, the records after the last checkpoint unsealed.
    let key = gateway::audit::format::hex(&site.audit_key());
    let (code, said) = testkit::document_verifier(&["verify".as_ref(), audit.as_os_str(), key.as_ref()]);
    assert_eq!(code, Some(0), "after {ROUNDS} kills, the document's verifier: {said}");
    let records = gateway::audit::verify::read_records(&audit).unwrap();
    let recorded: HashSet<&str> = records.iter().map(|r| r.record.request_id.as_str()).collect();
    let answers = answers.lock().unwrap();
    let data_answers = answers.iter().filter(|a| a.data).count();
    let missing: Vec<&Answer> = answers.iter().filter(|a| !recorded.contains(a.request_id.as_str())).collect();
    println!(
        "crash test: {ROUNDS} kill -9 rounds, {} answers seen ({data_answers} with data), {} records in {} \
         segments ({prepared_segments} of them prepared in advance), {torn_repairs} torn tails repaired \
         ({torn_bytes} bytes), {} checkpoints, missing records: {}",
        answers.len(),
        records.len(),
        report.segments,
        report.checkpoints,
        missing.len()
    );
    assert!(data_answers >= ROUNDS * 10, "the load was too light to mean anything: {data_answers} data answers");
    assert!(
        missing.is_empty(),
        "answers without a durable record: {:?}",
        missing.iter().take(5).map(|a| (&a.request_id, a.status)).collect::<Vec<_>>()
    );
    for a in answers.iter().filter(|a| a.data) {
        let r = records.iter().find(|r| r.record.request_id == a.request_id).unwrap();
        assert_eq!(r.record.outcome, gateway::audit::Outcome::Granted);
    }

    // The index, rebuilt piecewise after every kill (runs written before it, in-memory tables
    // lost with it), covers the trail exactly: every record once, nothing else.
    use gateway::audit::index::{AuditIndex as _, Selector};
    let store_dir = dir.join("store");
    assert!(store_dir.join("audit-index").is_dir(), "the store keeps its index runs in {}", store_dir.display());
    let store = gateway::store::SledStore::open(&store_dir).unwrap();
    let indexed: Vec<u64> =
        store.audit_query(&Selector::Time, 0, u64::MAX, usize::MAX).unwrap().into_iter().map(|l| l.seq).collect();
    let mut indexed_sorted = indexed.clone();
    indexed_sorted.sort_unstable();
    indexed_sorted.dedup();
    assert_eq!(indexed_sorted.len(), indexed.len(), "a record is indexed twice");
    let mut in_trail: Vec<u64> = records.iter().map(|r| r.seq).collect();
    in_trail.sort_unstable();
    assert_eq!(indexed_sorted, in_trail, "the index and the trail disagree after {ROUNDS} kills");
    let agency_a = records.iter().find_map(|r| r.record.caller.clone()).expect("calls name their caller");
    let caller = store.audit_query(&Selector::Caller(agency_a.clone()), 0, u64::MAX, usize::MAX).unwrap().len();
    let from_agency_a = records.iter().filter(|r| r.record.caller.as_ref() == Some(&agency_a)).count();
    assert_eq!(caller, from_agency_a);
    println!("crash test: the index holds {} records after the kills, agency A's {caller}", indexed.len());
}
