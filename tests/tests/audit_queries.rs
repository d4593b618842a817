//! Reading the audit trail on the control plane: the auditor's justified query (itself
//! audited) and the data subject's report through the citizen access point.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use bytes::Bytes;
use gateway::audit::RecordKind;
use gateway::audit::verify::read_records;
use http::{Method, StatusCode};
use tests::{ASSOC_CALLER, Harness, association, person, send, sigedis, vcode};

fn query(body: serde_json::Value) -> Bytes {
    Bytes::from(body.to_string())
}

#[tokio::test]
async fn auditor_queries_need_a_justification_and_are_themselves_audited() {
    let h = Harness::start().await.unwrap();
    let v = vcode();
    for i in 0..3 {
        let id = format!("assoc-{i}");
        association(&h.client(ASSOC_CALLER), &v, &[("x-request-id", id.as_str())]).await.unwrap();
    }
    association(&h.client("agency-b"), &v, &[("x-request-id", "assoc-refused")]).await.unwrap();
    sigedis(&h.client("bank-a"), &person(), &[("x-request-id", "pension")]).await.unwrap();

    let auditor = h.control_client("admin");
    let justification = serde_json::json!({
        "case_reference": "PV/2026/0815",
        "legal_ground": "Code of criminal procedure, art. 46bis",
        "requested_by": "Public prosecutor, Ghent"
    });
    // Without a justification: refused, and nothing is returned.
    let a =
        send(&auditor, Method::POST, "/audit/queries", &[], query(serde_json::json!({ "subject": v }))).await.unwrap();
    assert_eq!((a.status, a.code()), (StatusCode::BAD_REQUEST, Some("JUSTIFICATION_MISSING")));
    assert!(!a.text().contains("records"));
    // A recipient's certificate cannot query.
    let a = send(
        &h.control_client(ASSOC_CALLER),
        Method::POST,
        "/audit/queries",
        &[],
        query(serde_json::json!({ "subject": v, "justification": justification })),
    )
    .await
    .unwrap();
    assert_eq!((a.status, a.code()), (StatusCode::FORBIDDEN, Some("ADMIN_ROLE_MISSING")));

    // By subject: every call about the association, granted and refused.
    let a = send(
        &auditor,
        Method::POST,
        "/audit/queries",
        &[],
        query(serde_json::json!({ "subject": v, "justification": justification })),
    )
    .await
    .unwrap();
    assert_eq!(a.status, StatusCode::OK, "{}", a.text());
    let doc = a.json().unwrap();
    let ids: Vec<&str> = doc["records"].as_array().unwrap().iter().map(|r| r["request_id"].as_str().unwrap()).collect();
    assert_eq!(ids, ["assoc-0", "assoc-1", "assoc-2", "assoc-refused"]);
    assert_eq!(doc["truncated"], false);
    // A limit never cuts silently: the answer says more records matched.
    let a = send(
        &auditor,
        Method::POST,
        "/audit/queries",
        &[],
        query(serde_json::json!({ "subject": v, "limit": 2, "justification": justification })),
    )
    .await
    .unwrap();
    tests::openapi::check("POST", "/audit/queries", &a);
    let doc = a.json().unwrap();
    assert_eq!((doc["count"].as_u64(), doc["truncated"].as_bool()), (Some(2), Some(true)), "{doc}");
    // By caller: only bank A's call.
    let a = send(
        &auditor,
        Method::POST,
        "/audit/queries",
        &[],
        query(serde_json::json!({ "caller": "0456123494", "justification": justification })),
    )
    .await
    .unwrap();
    let doc = a.json().unwrap();
    assert_eq!(doc["count"], 1);
    assert_eq!(doc["records"][0]["request_id"], "pension");
    assert_eq!(doc["records"][0]["code"], "CONSENT_MISSING");

    // Each query is an audit record with its justification.
    let records = read_records(&h.demo.config.audit.dir).unwrap();
    let queries: Vec<_> = records.iter().filter(|r| r.record.kind == RecordKind::AuditQuery).collect();
    assert_eq!(queries.len(), 3, "the three answered queries (refused ones return nothing and record nothing)");
    assert!(queries[0].record.justification.as_deref().unwrap().contains("PV/2026/0815"));
    assert_eq!(queries[0].record.caller.as_deref(), Some("0123456749"));
}

#[tokio::test]
async fn the_data_subject_sees_who_consulted_and_who_was_refused() {
    let h = Harness::start().await.unwrap();
    let p = person();
    sigedis(&h.client("bank-a"), &p, &[]).await.unwrap();
    sigedis(&h.client("company"), &p, &[]).await.unwrap();
    sigedis(&h.client("bank-a"), &tests::other_person(), &[]).await.unwrap();

    let portal = h.control_client("citizen-portal");
    let a = send(&portal, Method::GET, "/audit/report", &[("x-subject", p.as_str())], Bytes::new()).await.unwrap();
    assert_eq!(a.status, StatusCode::OK, "{}", a.text());
    let doc = a.json().unwrap();
    assert_eq!(doc["count"], 2, "{doc}");
    let first = &doc["accesses"][0];
    assert_eq!(first["organisation"]["enterprise_number"], "0456123494");
    assert_eq!(first["organisation"]["name"], "Bank A (synthetic)");
    assert_eq!(first["service"], "sigedis.pensions");
    assert_eq!(first["purpose"], tests::SIGEDIS_PURPOSE);
    assert_eq!(first["refusal_code"], "CONSENT_MISSING");
    assert_eq!(doc["accesses"][1]["refusal_code"], "LEGAL_BASIS_NOT_APPLICABLE");
    assert!(first.get("end_user").is_none() && !a.text().contains("cert_fingerprint"));

    // Only a citizen access point may ask, and the NISS must be valid.
    let a = send(&h.control_client("bank-a"), Method::GET, "/audit/report", &[("x-subject", p.as_str())], Bytes::new())
        .await
        .unwrap();
    assert_eq!(a.code(), Some("ADMIN_ROLE_MISSING"));
    let a = send(&portal, Method::GET, "/audit/report", &[("x-subject", "85073003329")], Bytes::new()).await.unwrap();
    assert_eq!(a.code(), Some("SUBJECT_INVALID"));
    // The report request itself is in the trail.
    let records = read_records(&h.demo.config.audit.dir).unwrap();
    assert!(
        records.iter().any(|r| r.record.kind == RecordKind::AuditQuery && r.record.operation == "GET /audit/report")
    );
}
