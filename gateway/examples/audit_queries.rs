//! Query latencies on a generated trail, through the real API: starts the demo gateway on a
//! directory `passerelle audit generate` filled, then asks, one at a time, for citizen reports
//! (`GET /audit/report` through the citizen access point, one person over the whole trail) and
//! auditor queries (`POST /audit/queries`, one calling organisation over one day), each at a
//! person, organisation and day drawn at random, and prints their latency percentiles.
//!
//! ```text
//! passerelle audit generate DIR --records 10000000 --subjects 1000000 --organisations 100
//! cargo run --release -p gateway --example audit_queries -- DIR 1000000 100 10 [QUERIES] [cold]
//! ```
//!
//! The numbers after DIR repeat the generation's `--subjects`, `--organisations` and `--years`
//! (the records are a function of them). `cold` empties the kernel's page cache first (root):
//! the first queries then read the index and the records from the disk.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::{Duration, Instant};

use bytes::Bytes;
use gateway::audit::generate::{Plan, dir_bytes};
use gateway::demo::{Demo, DemoOptions};
use http::{Method, Request};
use http_body_util::Full;

/// A small deterministic generator (xorshift), so that runs ask the same questions.
struct Rng(u64);

impl Rng {
    fn below(&mut self, n: u64) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0 % n
    }
}

fn percentiles(name: &str, mut v: Vec<Duration>, found: u64) {
    v.sort();
    let at = |p: f64| v[((v.len() as f64 * p) as usize).min(v.len() - 1)].as_secs_f64() * 1e3;
    println!(
        "{name}: {} queries, {found} records found; p50 {:.2} ms, p90 {:.2} ms, p99 {:.2} ms, max {:.2} ms",
        v.len(),
        at(0.5),
        at(0.9),
        at(0.99),
        at(1.0)
    );
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().collect();
    let dir = std::path::PathBuf::from(&args[1]);
    let (subjects, organisations, years): (u64, u64, u64) = (args[2].parse()?, args[3].parse()?, args[4].parse()?);
    let queries: usize = args.get(5).map(|s| s.parse()).transpose()?.unwrap_or(1_000);
    let cold = args.get(6).is_some_and(|s| s == "cold");

    let started = Instant::now();
    let demo = Demo::start(DemoOptions::new(&dir, 0)).await?;
    println!("gateway ready on the trail in {:.1} s", started.elapsed().as_secs_f64());
    let trail = dir_bytes(&dir.join("audit"));
    let index = dir_bytes(&dir.join("store").join("audit-index"));
    let records = demo.gateway.audit.status.last_seq.load(std::sync::atomic::Ordering::Acquire);
    println!(
        "trail: {records} records, {trail} bytes ({:.0} a record); index: {index} bytes ({:.0} a record)",
        trail as f64 / records as f64,
        index as f64 / records as f64
    );
    if cold {
        std::fs::write("/proc/sys/vm/drop_caches", "3")?;
        println!("page cache emptied");
    }

    let mut rng = Rng(0x5EED_1234_ABCD_0001);
    let now_ms = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH)?.as_millis() as u64;
    let days = years * 365;
    let mut portal = demo.control_client("citizen-portal")?.connect().await?;
    let mut auditor = demo.control_client("admin")?.connect().await?;
    let (mut reports, mut audits) = (Vec::with_capacity(queries), Vec::with_capacity(queries));
    let (mut report_found, mut audit_found) = (0u64, 0u64);
    for _ in 0..queries {
        let mut b = [0u8; 11];
        let person = Plan::person(rng.below(subjects)).digits(&mut b).to_owned();
        let req = Request::builder()
            .method(Method::GET)
            .uri("/audit/report")
            .header("x-subject", person)
            .body(Full::new(Bytes::new()))?;
        let t = Instant::now();
        let a = portal.send(req).await?;
        reports.push(t.elapsed());
        anyhow::ensure!(a.status == 200, "report: {} {}", a.status, a.text());
        report_found += a.json()?["count"].as_u64().unwrap_or(0);

        let mut k = [0u8; 10];
        let org = Plan::organisation(rng.below(organisations)).digits(&mut k).to_owned();
        let day_start = (now_ms / 86_400_000 - 1 - rng.below(days - 1)) * 86_400_000;
        let rfc = |ms: u64| {
            time::OffsetDateTime::from_unix_timestamp_nanos(i128::from(ms) * 1_000_000)
                .unwrap()
                .format(&time::format_description::well_known::Rfc3339)
                .unwrap()
        };
        let body = serde_json::json!({
            "caller": org, "from": rfc(day_start), "to": rfc(day_start + 86_399_999),
            "justification": { "case_reference": "SCALE/1", "legal_ground": "measurement",
                               "requested_by": "the operator" },
        });
        let req = Request::builder()
            .method(Method::POST)
            .uri("/audit/queries")
            .header("content-type", "application/json")
            .body(Full::new(Bytes::from(body.to_string())))?;
        let t = Instant::now();
        let a = auditor.send(req).await?;
        audits.push(t.elapsed());
        anyhow::ensure!(a.status == 200, "query: {} {}", a.status, a.text());
        audit_found += a.json()?["count"].as_u64().unwrap_or(0);
    }
    percentiles("citizen report (one person, whole trail)", reports, report_found);
    percentiles("auditor query (one organisation, one day)", audits, audit_found);
    demo.gateway.shutdown().await;
    Ok(())
}
