//! The imposed layout and minimisation in the running gateway: the answer carries exactly the
//! granted fields, a non-conforming answer never leaves, a body where the layout has none never
//! reaches the source, and the subjects that leave are in the audit record.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeSet;
use std::sync::atomic::Ordering;

use bytes::Bytes;
use gateway::audit::SubjectRef;
use gateway::audit::verify::read_records;
use http::{Method, StatusCode};
use tests::{ASSOC_CALLER, Harness, association, counting_upstream, send, vcode};

fn keys(v: &serde_json::Value) -> BTreeSet<String> {
    v.as_object().unwrap().keys().cloned().collect()
}

#[tokio::test]
async fn the_answer_carries_exactly_the_granted_fields() {
    let h = Harness::start().await.unwrap();
    let a = association(&h.client(ASSOC_CALLER), &vcode(), &[("x-request-id", "full")]).await.unwrap();
    assert_eq!(a.status, StatusCode::OK, "{}", a.text());
    let granted: BTreeSet<String> =
        ["vCode", "name", "status", "contact", "purpose", "representatives", "bankAccount", "enterpriseNumber"]
            .map(String::from)
            .into();
    assert_eq!(keys(&a.json().unwrap()), granted, "the sandbox also sends classifications, structure, recognition");
    let records = read_records(&h.demo.config.audit.dir).unwrap();
    let r = records.iter().find(|r| r.record.request_id == "full").unwrap();
    let persons = r.record.subjects.iter().filter(|s| matches!(s, SubjectRef::Person(_))).count();
    assert!(persons >= 1, "the representatives who left are recorded: {:?}", r.record.subjects);
}

fn narrow(name: &str, text: String) -> String {
    if name != "associations.toml" {
        return text;
    }
    text.replace(
        r#"fields = ["vCode", "name", "status", "contact", "purpose", "representatives", "bankAccount", "enterpriseNumber"]"#,
        r#"fields = ["vCode", "name"]"#,
    )
}

#[tokio::test]
async fn a_grant_with_fewer_fields_returns_fewer() {
    let h = Harness::with(&[], Some(narrow)).await.unwrap();
    let a = association(&h.client(ASSOC_CALLER), &vcode(), &[("x-request-id", "narrow")]).await.unwrap();
    assert_eq!(a.status, StatusCode::OK, "{}", a.text());
    assert_eq!(keys(&a.json().unwrap()), ["name", "vCode"].map(String::from).into());
    assert!(!a.text().contains("BE"), "no bank account, no representatives");
    let records = read_records(&h.demo.config.audit.dir).unwrap();
    let r = records.iter().find(|r| r.record.request_id == "narrow").unwrap();
    assert_eq!(r.record.fields, ["vCode", "name"]);
    assert_eq!(r.record.subjects, vec![SubjectRef::Association(vcode())], "no representative left");
}

#[tokio::test]
async fn a_non_conforming_answer_never_leaves() {
    for (bad, why) in [
        (
            serde_json::json!({"vCode": "V0001001", "name": "x", "status": "dormant", "bankAccount": "BE68539007547034"}),
            "status",
        ),
        (
            serde_json::json!({"vCode": "V0001001", "name": "x", "status": "active", "leaked": "85073003328"}),
            "additionalProperties",
        ),
        (
            serde_json::json!({"vCode": "V0001001", "name": "x", "status": "active", "representatives": [{"niss": 85073003328_u64, "name": "n", "role": "r"}]}),
            "/representatives/0/niss",
        ),
    ] {
        let (upstream, _) = counting_upstream(bad).await.unwrap();
        let url = upstream.url();
        let h =
            Harness::with_overrides(&[("PASSERELLE__SOURCES__ASSOCIATIONS__UPSTREAM", url.as_str())]).await.unwrap();
        let a = association(&h.client(ASSOC_CALLER), &vcode(), &[]).await.unwrap();
        assert_eq!((a.status, a.code()), (StatusCode::BAD_GATEWAY, Some("UPSTREAM_LAYOUT_VIOLATION")), "{}", a.text());
        let detail = a.json().unwrap()["detail"].as_str().unwrap().to_owned();
        assert!(detail.contains(why), "{detail}");
        assert!(!a.text().contains("85073003328") && !a.text().contains("BE68"), "no data leaves: {}", a.text());
        upstream.abort();
    }
    // Not JSON at all.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let garbage =
        adapters::sandbox::serve(listener, |_| async { adapters::sandbox::text(StatusCode::OK, "<html>oops</html>") })
            .unwrap();
    let url = garbage.url();
    let h = Harness::with_overrides(&[("PASSERELLE__SOURCES__ASSOCIATIONS__UPSTREAM", url.as_str())]).await.unwrap();
    let a = association(&h.client(ASSOC_CALLER), &vcode(), &[]).await.unwrap();
    assert_eq!(a.code(), Some("UPSTREAM_LAYOUT_VIOLATION"));
    assert!(!a.text().contains("oops"));
}

#[tokio::test]
async fn a_body_the_layout_does_not_take_never_reaches_the_source() {
    let (upstream, hits) = counting_upstream(tests::association_doc("x")).await.unwrap();
    let url = upstream.url();
    let h = Harness::with_overrides(&[("PASSERELLE__SOURCES__ASSOCIATIONS__UPSTREAM", url.as_str())]).await.unwrap();
    let v = vcode();
    let headers =
        [("x-legal-basis", tests::ASSOC_LEGAL_BASIS), ("x-purpose", tests::ASSOC_PURPOSE), ("x-subject", v.as_str())];
    for body in [&b"{\"vCode\":\"V0001001\"}"[..], b"<x/>", b"garbage"] {
        let a =
            send(&h.client(ASSOC_CALLER), Method::GET, "/associations/association", &headers, Bytes::from_static(body))
                .await
                .unwrap();
        assert_eq!((a.status, a.code()), (StatusCode::UNPROCESSABLE_ENTITY, Some("LAYOUT_VIOLATION")));
    }
    assert_eq!(hits.load(Ordering::SeqCst), 0);
}

#[tokio::test]
async fn an_unknown_subject_is_a_clear_not_found() {
    let h = Harness::start().await.unwrap();
    let a = association(&h.client(ASSOC_CALLER), "V9999999", &[]).await.unwrap();
    assert_eq!((a.status, a.code()), (StatusCode::NOT_FOUND, Some("SUBJECT_NOT_FOUND")), "{}", a.text());
}
