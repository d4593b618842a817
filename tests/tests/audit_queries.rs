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

/// Reads every page of an answer, following `next_cursor`; the records' request ids and the
/// number of pages.
async fn all_pages<F, Fut>(mut page: F) -> (Vec<String>, usize)
where
    F: FnMut(Option<String>) -> Fut,
    Fut: std::future::Future<Output = serde_json::Value>,
{
    let (mut ids, mut pages, mut cursor) = (Vec::new(), 0, None);
    loop {
        let doc = page(cursor.take()).await;
        pages += 1;
        for r in doc["records"].as_array().unwrap() {
            ids.push(r["request_id"].as_str().unwrap().to_owned());
        }
        match doc["next_cursor"].as_str() {
            Some(c) => cursor = Some(c.to_owned()),
            None => return (ids, pages),
        }
        assert!(pages < 1_000, "paging does not end");
    }
}

/// Paging never loses nor repeats a record, also among records of one millisecond: 60 calls
/// made at once, read two at a time, give the records one page holds.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pages_of_an_audit_query_add_up_to_the_whole() {
    let h = Harness::start().await.unwrap();
    let v = vcode();
    let mut calls = tokio::task::JoinSet::new();
    for i in 0..60 {
        let c = h.client(ASSOC_CALLER);
        let v = v.clone();
        calls.spawn(async move { association(&c, &v, &[("x-request-id", format!("burst-{i}").as_str())]).await });
    }
    while let Some(done) = calls.join_next().await {
        assert_eq!(done.unwrap().unwrap().status, StatusCode::OK);
    }
    let auditor = h.control_client("admin");
    let justification = serde_json::json!({
        "case_reference": "DPA/2026/12", "legal_ground": "GDPR art. 58", "requested_by": "Inspection service"
    });
    let whole = send(
        &auditor,
        Method::POST,
        "/audit/queries",
        &[],
        query(serde_json::json!({ "subject": v, "justification": justification })),
    )
    .await
    .unwrap()
    .json()
    .unwrap();
    let times: Vec<u64> = whole["records"].as_array().unwrap().iter().map(|r| r["time_ms"].as_u64().unwrap()).collect();
    let ties = times.windows(2).filter(|w| w[0] == w[1]).count();
    eprintln!("{ties} record(s) share their millisecond with the one before");
    let whole: Vec<String> =
        whole["records"].as_array().unwrap().iter().map(|r| r["request_id"].as_str().unwrap().to_owned()).collect();
    assert_eq!(whole.len(), 60);
    let (paged, pages) = all_pages(|cursor| {
        let body = serde_json::json!({ "subject": v, "limit": 2, "cursor": cursor, "justification": justification });
        let auditor = &auditor;
        async move {
            let a = send(auditor, Method::POST, "/audit/queries", &[], query(body)).await.unwrap();
            assert_eq!(a.status, StatusCode::OK, "{}", a.text());
            tests::openapi::check("POST", "/audit/queries", &a);
            let doc = a.json().unwrap();
            assert!(doc["count"].as_u64().unwrap() <= 2);
            doc
        }
    })
    .await;
    // The pages, end to end, are the whole answer, and the record of the query that gave it
    // (made before the paging began); the paging's own records are not read back.
    assert_eq!(paged[..60], whole[..], "the pages, end to end, are the whole answer");
    assert_eq!(paged.len(), 61);
    assert!(paged[60].starts_with("audit-query-"), "{}", paged[60]);
    assert_eq!(pages, 31);
    let a = send(
        &auditor,
        Method::POST,
        "/audit/queries",
        &[],
        query(serde_json::json!({ "subject": v, "cursor": "tomorrow", "justification": justification })),
    )
    .await
    .unwrap();
    assert_eq!(a.code(), Some("REQUEST_INVALID"));
}

/// Seed 004 §6: a designated requester asks, the privacy office of the data owner examines,
/// the inquiry runs only on its favourable advice, and the requester reads the result; every
/// step is a record, and nobody approves its own inquiry.
#[tokio::test]
async fn the_a_posteriori_control_runs_as_the_seed_prescribes() {
    use serde_json::json;
    use tests::{PROSECUTOR, PROSECUTOR_KBO};
    let h = Harness::start().await.unwrap();
    let (p, v) = (person(), vcode());
    for i in 0..3 {
        sigedis(&h.client("bank-a"), &p, &[("x-request-id", format!("pension-{i}").as_str())]).await.unwrap();
    }
    sigedis(&h.client("company"), &p, &[("x-request-id", "pension-company")]).await.unwrap();
    // Bank A's call to another owner's source: not in an inquiry into Sigedis' trail.
    association(&h.client("bank-a"), &v, &[("x-request-id", "assoc-by-bank")]).await.unwrap();

    let a = h
        .ctl(
            "admin",
            Method::POST,
            "/organisations",
            Some(json!({ "kbo": PROSECUTOR_KBO, "name": "Public prosecutor's office (synthetic)", "kind": "external-authority" })),
        )
        .await;
    assert_eq!(a.status, StatusCode::CREATED, "{}", a.text());
    let sigedis_kbo = "0872000108";
    let designation = json!({
        "organisation": PROSECUTOR_KBO, "role": "prosecutor", "owner": sigedis_kbo,
        "designation": "Procureur du Roi, Bruxelles", "valid_until": "2099-12-31"
    });
    // Nobody designates itself, nor for another owner's trail.
    for who in [PROSECUTOR, "bank-a", "digitaal-vlaanderen"] {
        let a = h.ctl(who, Method::POST, "/audit/requesters", Some(designation.clone())).await;
        assert_eq!(a.code(), Some("ADMIN_ROLE_MISSING"), "{who}: {}", a.text());
    }
    // Sigedis (owner and, naming none, its own privacy office) designates the prosecutor.
    let a = h.ctl("sigedis", Method::POST, "/audit/requesters", Some(designation.clone())).await;
    assert_eq!(a.status, StatusCode::CREATED, "{}", a.text());
    assert_eq!(a.json().unwrap()["in_force"], true);
    let a = h.ctl("sigedis", Method::POST, "/audit/requesters", Some(designation.clone())).await;
    assert_eq!(a.code(), Some("ALREADY_EXISTS"));
    let mut lapsed = designation.clone();
    lapsed["valid_until"] = json!("2020-01-01");
    let a = h.ctl("admin", Method::POST, "/audit/requesters", Some(lapsed)).await;
    assert_eq!(a.code(), Some("REQUEST_INVALID"), "a designation that ended before it starts");

    let justification = json!({
        "case_reference": "BR.12.34.5678/26", "legal_ground": "Code of criminal procedure, art. 28bis",
        "requested_by": "Substitute prosecutor, Brussels"
    });
    let inquiry = json!({ "owner": sigedis_kbo, "caller": "0456123494", "justification": justification });
    // Only a designated requester files, and with the form's justification.
    let a = h.ctl("bank-b", Method::POST, "/audit/requests", Some(inquiry.clone())).await;
    assert_eq!(a.code(), Some("ADMIN_ROLE_MISSING"), "{}", a.text());
    let a = h
        .ctl(PROSECUTOR, Method::POST, "/audit/requests", Some(json!({ "owner": sigedis_kbo, "caller": "0456123494" })))
        .await;
    assert_eq!(a.code(), Some("JUSTIFICATION_MISSING"));
    let a = h.ctl(PROSECUTOR, Method::POST, "/audit/requests", Some(inquiry.clone())).await;
    assert_eq!(a.status, StatusCode::CREATED, "{}", a.text());
    let filed = a.json().unwrap();
    assert_eq!(filed["state"], "submitted");
    let id = filed["id"].as_str().unwrap().to_owned();
    let results = format!("/audit/requests/{id}/results");
    let advice = format!("/audit/requests/{id}/advice");

    // Nothing runs before the advice.
    let a = h.ctl(PROSECUTOR, Method::GET, &results, None).await;
    assert_eq!((a.status, a.code()), (StatusCode::CONFLICT, Some("TRANSITION_NOT_ALLOWED")));
    // The requester, a bystander and another owner cannot advise.
    let favourable =
        json!({ "favourable": true, "reason": "official request checked; proportionate: one caller, all time" });
    for who in [PROSECUTOR, "bank-b", "digitaal-vlaanderen"] {
        let a = h.ctl(who, Method::POST, &advice, Some(favourable.clone())).await;
        assert_eq!(a.code(), Some("ADMIN_ROLE_MISSING"), "{who}");
    }
    let a = h.ctl("sigedis", Method::POST, &advice, Some(favourable.clone())).await;
    assert_eq!(a.status, StatusCode::OK, "{}", a.text());
    assert_eq!(a.json().unwrap()["state"], "approved");
    let a = h.ctl("sigedis", Method::POST, &advice, Some(favourable.clone())).await;
    assert_eq!(a.code(), Some("TRANSITION_NOT_ALLOWED"), "advised once");
    // A call after the advice is not part of the inquiry.
    sigedis(&h.client("bank-a"), &p, &[("x-request-id", "pension-after")]).await.unwrap();

    // The requester reads the result page by page: bank A's calls to Sigedis before the advice.
    let (ids, pages) = all_pages(|cursor| {
        let path = match cursor {
            Some(c) => format!("{results}?limit=1&cursor={c}"),
            None => format!("{results}?limit=1"),
        };
        let h = &h;
        async move {
            let a = h.ctl(PROSECUTOR, Method::GET, &path, None).await;
            assert_eq!(a.status, StatusCode::OK, "{}", a.text());
            a.json().unwrap()
        }
    })
    .await;
    assert_eq!(ids, ["pension-0", "pension-1", "pension-2"], "bank A's calls to Sigedis, nothing else");
    assert!(pages >= 3);
    // The privacy office may read it to pass it on; nobody else.
    let a = h.ctl("sigedis", Method::GET, &results, None).await;
    assert_eq!(a.json().unwrap()["count"], 3);
    let a = h.ctl("bank-b", Method::GET, &results, None).await;
    assert_eq!(a.code(), Some("ADMIN_ROLE_MISSING"));
    let listed = h.ctl(PROSECUTOR, Method::GET, "/audit/requests", None).await.json().unwrap();
    assert_eq!(listed["count"], 1);
    assert_eq!(h.ctl("bank-b", Method::GET, "/audit/requests", None).await.json().unwrap()["count"], 0);

    // An unfavourable advice: nothing ever runs.
    let a = h
        .ctl(
            PROSECUTOR,
            Method::POST,
            "/audit/requests",
            Some(json!({ "owner": sigedis_kbo, "subject": p, "justification": justification })),
        )
        .await;
    let second = a.json().unwrap()["id"].as_str().unwrap().to_owned();
    let a = h
        .ctl(
            "sigedis",
            Method::POST,
            &format!("/audit/requests/{second}/advice"),
            Some(json!({ "favourable": false, "reason": "no official request found" })),
        )
        .await;
    assert_eq!(a.json().unwrap()["state"], "rejected");
    let a = h.ctl(PROSECUTOR, Method::GET, &format!("/audit/requests/{second}/results"), None).await;
    assert_eq!(a.code(), Some("TRANSITION_NOT_ALLOWED"));

    // The police must give the apostille's number.
    let police = json!({
        "organisation": PROSECUTOR_KBO, "role": "police", "owner": "0511223355",
        "designation": "Police zone (synthetic)", "valid_until": "2099-12-31"
    });
    assert_eq!(h.ctl("div", Method::POST, "/audit/requesters", Some(police)).await.status, StatusCode::CREATED);
    let a = h
        .ctl(
            PROSECUTOR,
            Method::POST,
            "/audit/requests",
            Some(json!({ "owner": "0511223355", "subject": p, "justification": justification })),
        )
        .await;
    assert_eq!(a.code(), Some("JUSTIFICATION_MISSING"));
    assert!(a.text().contains("apostille"));

    // A designation that ended lets nothing more be filed.
    let a =
        h.ctl("sigedis", Method::POST, &format!("/audit/requesters/{sigedis_kbo}-{PROSECUTOR_KBO}/end"), None).await;
    assert_eq!(a.status, StatusCode::OK, "{}", a.text());
    let a = h.ctl(PROSECUTOR, Method::POST, "/audit/requests", Some(inquiry)).await;
    assert_eq!(a.code(), Some("ADMIN_ROLE_MISSING"));

    // Every step is in the trail under the inquiry's id, in order.
    let records = read_records(&h.demo.config.audit.dir).unwrap();
    let steps: Vec<&str> =
        records.iter().filter(|r| r.record.request_id == id).map(|r| r.record.operation.as_str()).collect();
    assert_eq!(steps[..2], ["POST /audit/requests", "POST /audit/requests/{id}/advice"]);
    assert_eq!(steps.len(), 2 + pages + 1, "each page read and the privacy office's read: {steps:?}");
    assert!(steps[2..].iter().all(|s| *s == "GET /audit/requests/{id}/results"));
    let filed = records.iter().find(|r| r.record.request_id == id).unwrap();
    assert_eq!(filed.record.caller.as_deref(), Some(PROSECUTOR_KBO));
    assert!(filed.record.justification.as_deref().unwrap().contains("BR.12.34.5678/26"));
}
