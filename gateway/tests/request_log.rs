//! The request log of the real `passerelle serve` process in JSON: one line per call at info,
//! with the request id, service, caller, outcome, refusal code, status and latency, and never
//! a subject.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use bytes::Bytes;
use gateway::demo::{ASSOC_CALLER, ASSOC_LEGAL_BASIS, ASSOC_PURPOSE, SIGEDIS_LEGAL_BASIS, SIGEDIS_PURPOSE};
use http::Method;
use support::Site;

/// Expected outcome, caller, headers.
type Call<'a> = (&'a str, &'a str, [(&'a str, &'a str); 4]);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_json_line_per_call_without_personal_data() {
    let site = Site::new().await;
    let mut gw = site.start_with("json.log", &[("PASSERELLE__LOG__FORMAT", "json")]).await;
    let vcode = gateway::demo::association().unwrap().to_string();
    let mut d = [0u8; 11];
    let person = adapters::sigedis::sandbox::Register::persons()[2].digits(&mut d).to_owned();
    let calls: [Call<'_>; 3] = [
        (
            "granted",
            ASSOC_CALLER,
            [
                ("x-legal-basis", ASSOC_LEGAL_BASIS),
                ("x-purpose", ASSOC_PURPOSE),
                ("x-subject", &vcode),
                ("x-request-id", "log-granted"),
            ],
        ),
        (
            "refused",
            "bank-a",
            [
                ("x-legal-basis", SIGEDIS_LEGAL_BASIS),
                ("x-purpose", SIGEDIS_PURPOSE),
                ("x-subject", &person),
                ("x-request-id", "log-refused"),
            ],
        ),
        (
            "refused",
            ASSOC_CALLER,
            [
                ("x-legal-basis", ASSOC_LEGAL_BASIS),
                ("x-purpose", "NOT_A_PURPOSE"),
                ("x-subject", &vcode),
                ("x-request-id", "log-purpose"),
            ],
        ),
    ];
    for (_, who, headers) in &calls {
        let path = if *who == "bank-a" { "/sigedis/pensions" } else { "/associations/association" };
        let req = gateway::client::request(Method::GET, path, headers, Bytes::new()).unwrap();
        site.client(who, false).send(req).await.unwrap();
    }
    assert!(support::terminate(&mut gw).success());
    let log = std::fs::read_to_string(site.path().join("json.log")).unwrap();
    let lines: Vec<serde_json::Value> =
        log.lines().map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}"))).collect();
    let requests: Vec<&serde_json::Value> = lines.iter().filter(|l| l["target"] == "passerelle::request").collect();
    assert_eq!(requests.len(), calls.len(), "one line per call: {requests:?}");
    for ((outcome, ..), line) in calls.iter().zip(&requests) {
        let f = &line["fields"];
        assert_eq!(line["level"], "INFO");
        assert_eq!(f["outcome"], *outcome);
        assert!(f["request_id"].as_str().unwrap().starts_with("log-"));
        assert!(f["service"].is_string() && f["caller"].is_string() && f["status"].is_u64());
        assert!(f["latency_us"].as_u64().unwrap() > 0);
    }
    assert_eq!(requests[1]["fields"]["code"], "CONSENT_MISSING");
    assert_eq!(requests[2]["fields"]["code"], "PURPOSE_NOT_ALLOWED");
    assert!(!log.contains(&person) && !log.contains(&vcode), "no subject in the log");
}
