//! The web console in a real browser (Debian's chromium, driven by Playwright from
//! `tests/console/console_check.py`; `scripts/test` installs both): organisations sign in with
//! their client certificates, a data owner sees its sources and moves a convention through its
//! lifecycle, a third party gets the 403 page, a privacy office approves an audit request and
//! advises on an exceptional access that approves itself seven days later on the gateway's
//! clock, and forms from elsewhere are refused. Each step is checked on the page and through
//! the API; this test checks the end state through the API once more.
//!
//! `PASSERELLE_CONSOLE_SCREENSHOTS=docs/console` refreshes the screenshots in the repository.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::process::Command;
use std::time::Duration;

use http::{Method, StatusCode};
use serde_json::json;
use tests::{ASSOC_CALLER, FLEET, FLEET_KBO, Harness, PROSECUTOR, PROSECUTOR_KBO};

const DELIBERATION: &str = "CSI/AF/31/2026";
const CONVENTION: &str = "DIV/CONV/2026/0100";
const ACCESS: &str = "x-bank";
const GENERAL: &str = "CSI/SSH/26/010/FI";
const BANK_A_KBO: &str = "0456123494";

/// The convention requested, the prosecutor's audit request filed, a bank's exceptional access
/// filed on Sigedis' matrix: what the organisations then handle in the console.
async fn set_up(h: &Harness) -> String {
    let created = |a: tests::Answer| assert_eq!(a.status, StatusCode::CREATED, "{}", a.text());
    // Bank A's calls to Sigedis: what the prosecutor's audit request will read.
    for i in 0..2 {
        let id = format!("pension-console-{i}");
        tests::sigedis(&h.client("bank-a"), &tests::person(), &[("x-request-id", id.as_str())]).await.unwrap();
    }
    let org = json!({ "kbo": FLEET_KBO, "name": "Fleet lessor (synthetic)", "kind": "leasing-company" });
    created(h.ctl("admin", Method::POST, "/organisations", Some(org)).await);
    // Its certificate signed by the gateway's CA: the integrator's page shows its days left.
    let kbo = policies::ids::Kbo::parse(FLEET_KBO).unwrap();
    let (request, _key) = certs::csr(&certs::ClientSpec::org("Fleet lessor (synthetic)", kbo)).unwrap();
    let path = format!("/organisations/{FLEET_KBO}/certificates");
    let a = h.ctl("admin", Method::POST, &path, Some(json!({ "csr": request }))).await;
    assert!(a.status.is_success(), "{}", a.text());
    let deliberation = json!({
        "reference": DELIBERATION, "kind": "deliberation", "title": "Délibération AF n° 31/2026",
        "authority": "CSI-AF", "number": "31/2026", "date": "2026-10-01", "source": "div", "status": "active",
    });
    created(h.ctl("div", Method::POST, "/instruments", Some(deliberation)).await);
    let convention = json!({
        "reference": CONVENTION, "kind": "convention", "parent": DELIBERATION,
        "title": "DIV data communication convention – fleet lessor",
        "grants": [{ "id": "div-fleet-lessor", "recipient": { "org": FLEET_KBO }, "service": "div.vehicle",
            "purposes": ["FLEET_MANAGEMENT"], "fields": ["plate", "make", "model", "fuel"] }],
    });
    created(h.ctl("div", Method::POST, "/instruments", Some(convention)).await);

    let org = json!({ "kbo": PROSECUTOR_KBO, "name": "Public prosecutor's office (synthetic)", "kind": "external-authority" });
    created(h.ctl("admin", Method::POST, "/organisations", Some(org)).await);
    let sigedis_kbo = "0872000108";
    let designation = json!({ "organisation": PROSECUTOR_KBO, "role": "prosecutor", "owner": sigedis_kbo,
        "designation": "Procureur du Roi, Bruxelles", "valid_until": "2099-12-31" });
    created(h.ctl("sigedis", Method::POST, "/audit/requesters", Some(designation)).await);
    let justification = json!({ "case_reference": "BR.12.34.5678/26",
        "legal_ground": "Code of criminal procedure, art. 28bis", "requested_by": "Substitute prosecutor, Brussels" });
    let inquiry = json!({ "owner": sigedis_kbo, "caller": "0456123494", "justification": justification });
    let a = h.ctl(PROSECUTOR, Method::POST, "/audit/requests", Some(inquiry)).await;
    assert_eq!(a.status, StatusCode::CREATED, "{}", a.text());
    let inquiry = a.json().unwrap()["id"].as_str().unwrap().to_owned();

    let matrix = json!({ "reference": "SIGEDIS/MATRIX/2026", "kind": "access-matrix",
        "title": "Sigedis internal matrix", "source": "sigedis", "status": "active" });
    created(h.ctl("sigedis", Method::POST, "/instruments", Some(matrix)).await);
    let until = policies::model::Date::from_days((h.demo.gateway.policy.now_ms() / 86_400_000) as i64 + 60).unwrap();
    let access = json!({ "id": ACCESS, "instrument": "SIGEDIS/MATRIX/2026", "end_user": "adviser-1",
        "service": "sigedis.pensions", "purposes": ["SUPPLEMENTARY_PENSION_INFO"], "fields": ["planType"],
        "justification": "an urgent case", "valid_until": until.to_string() });
    created(h.ctl("bank-a", Method::POST, "/exceptional-accesses", Some(access)).await);

    // A general instrument of Sigedis' issued by the CSI, and Bank A's request to adhere.
    let framework = json!({ "reference": "CSI/SSH/26/010", "kind": "general", "source": "sigedis", "status": "active",
        "title": "Framework for DB2P datatransfer", "authority": "CSI-SSH", "number": "26/010", "date": "2026-02-10",
        "eligible": ["financial-institution", "insurer"] });
    let special = json!({ "reference": GENERAL, "kind": "general", "parent": "CSI/SSH/26/010", "status": "active",
        "title": "Special authorization: financial institutions × supplementary pension data",
        "authority": "CSI-SSH", "number": "26/010-FI", "date": "2026-03-02", "eligible": ["financial-institution"],
        "grants": [{ "id": "sigedis-fi-v2", "recipient": { "adherents": true }, "service": "sigedis.pensions",
            "purposes": ["SUPPLEMENTARY_PENSION_INFO"], "consent": true, "fields": ["organiser", "planType"] }] });
    for body in [framework, special] {
        created(h.ctl("sigedis", Method::POST, "/instruments", Some(body)).await);
    }
    let adhesion = json!({ "org": BANK_A_KBO, "official_name": "Bank A NV (synthetic)", "seat": "Rue Royale 1, 1000 Brussels",
        "requested_by": "An Janssens", "capacity": "Head of retirement planning", "reference": "ADH-2026-0042",
        "modalities_confirmed": true, "evaluation_form": { "title": "Evaluation form DB2P", "reference": "EF-2026-7" } });
    let path = format!("/instruments/{}/adhesions", tests::enc(GENERAL));
    created(h.ctl("bank-a", Method::POST, &path, Some(adhesion)).await);

    // The data plane answers and refuses: what the integrator's last hour shows.
    for who in [ASSOC_CALLER, ASSOC_CALLER, "bank-a"] {
        tests::association(&h.client(who), &tests::vcode(), &[]).await.unwrap();
    }
    inquiry
}

fn browser(phase: &str, config: &std::path::Path) {
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/console/console_check.py");
    let out = Command::new("python3").arg(script).arg(phase).arg(config).output().expect("python3");
    assert!(
        out.status.success(),
        "console phase {phase} failed (scripts/test installs chromium and playwright):\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn organisations_run_their_flows_from_the_console_in_a_browser() {
    let h = Harness::start().await.unwrap();
    let inquiry = set_up(&h).await;

    let dir = tempfile::tempdir().unwrap();
    let write = |name: &str, text: &str| {
        let p = dir.path().join(name);
        std::fs::write(&p, text).unwrap();
        p.to_str().unwrap().to_owned()
    };
    let ca = write("ca.pem", &h.demo.pki.ca.cert_pem());
    let mut certs = serde_json::Map::new();
    for who in ["div", "sigedis", "bank-a", "admin", "csi-ssh", FLEET, PROSECUTOR] {
        let issued = h.demo.pki.client(who).unwrap();
        let cert = write(&format!("{who}.pem"), &issued.cert_pem);
        let key = write(&format!("{who}.key"), &issued.key_pem);
        certs.insert(who.to_owned(), json!([cert, key]));
    }
    let shots = match std::env::var("PASSERELLE_CONSOLE_SCREENSHOTS") {
        Ok(d) => std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("..").join(d),
        Err(_) => dir.path().to_owned(),
    };
    std::fs::create_dir_all(&shots).unwrap();
    let port = h.demo.gateway.control_addr.unwrap().port();
    let config = json!({
        "base": format!("https://127.0.0.1:{port}"),
        "ca": ca, "certs": certs, "screenshots": shots,
        "kbo": { "div": gateway::demo::org_kbo("div").unwrap().to_string() },
        "convention": CONVENTION, "deliberation": DELIBERATION, "inquiry": inquiry, "access": ACCESS,
        "general": GENERAL, "bank_a": BANK_A_KBO,
        "history": { "xsd": adapters::div::sandbox::HISTORY_XSD, "upstream_path": adapters::div::sandbox::HISTORY_PATH },
    });
    let config_path = dir.path().join("config.json");
    std::fs::write(&config_path, config.to_string()).unwrap();

    let run = |phase: &'static str| {
        let p = config_path.clone();
        tokio::task::spawn_blocking(move || browser(phase, &p))
    };
    run("one").await.unwrap();
    // What the browser did, as the API shows it.
    let a = h.ctl("div", Method::GET, &format!("/instruments/{}", tests::enc(CONVENTION)), None).await;
    assert_eq!(a.json().unwrap()["state_or_status"], "published", "{}", a.text());
    let a = h.ctl(PROSECUTOR, Method::GET, &format!("/audit/requests/{inquiry}"), None).await;
    assert_eq!(a.json().unwrap()["state"], "approved", "{}", a.text());
    let a = h.ctl("sigedis", Method::GET, &format!("/instruments/{}", tests::enc(GENERAL)), None).await;
    assert_eq!(a.json().unwrap()["adhesions"][0]["state"], "active", "{}", a.text());
    // The integrator's last hour, as documented; nobody else's.
    let a = h.ctl("admin", Method::GET, "/activity", None).await;
    let last = a.json().unwrap();
    assert!(last["calls"].as_u64().unwrap() >= 3 && last["refused"].as_u64().unwrap() >= 1, "{last}");
    assert_eq!(h.ctl("div", Method::GET, "/activity", None).await.code(), Some("ADMIN_ROLE_MISSING"));
    let a = h.ctl("div", Method::GET, "/services", None).await;
    assert!(a.text().contains("\"div.history\""), "registered from the console: {}", a.text());
    // Every change made in the browser is in the change history, by the organisation that made it.
    let a = h.ctl("div", Method::GET, "/changes", None).await;
    assert!(a.text().contains("published"), "{}", a.text());

    // Day 7 after the advice, on the gateway's clock.
    h.demo.gateway.policy.advance_clock(Duration::from_secs(7 * 86_400));
    run("two").await.unwrap();
    let a = h.ctl("sigedis", Method::GET, "/exceptional-accesses", None).await;
    let items = a.json().unwrap()["items"].as_array().unwrap().clone();
    let x = items.iter().find(|x| x["id"] == ACCESS).unwrap();
    assert!(x["approval"].as_str().unwrap().starts_with("approved tacitly"), "{x}");
}
