//! The chain of authority, attacked by participants trying to widen their own rights: each of
//! the eight ways found on an earlier main now fails for the participant with a precise code,
//! over real mTLS against a running gateway with real sandboxes (every control-plane answer is
//! checked against the OpenAPI document by `Harness::ctl`).

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use bytes::Bytes;
use http::{Method, StatusCode};
use serde_json::{Value, json};
use tests::{ASSOC_CALLER, Answer, Harness, association, person, send, sigedis, sigedis_consent, vcode};

fn enc(reference: &str) -> String {
    reference.replace('/', "%2F")
}

fn day(h: &Harness, offset: i64) -> String {
    let today = (h.demo.gateway.policy.now_ms() / 86_400_000) as i64;
    policies::model::Date::from_days(today + offset).unwrap().to_string()
}

async fn transition(h: &Harness, who: &str, reference: &str, to: &str, reason: Option<&str>) -> Answer {
    let path = format!("/instruments/{}/transitions", enc(reference));
    h.ctl(who, Method::POST, &path, Some(json!({ "to": to, "reason": reason }))).await
}

async fn rn_person(h: &Harness, who: &str, end_user: &str, purpose: &str) -> Answer {
    let mut b = [0u8; 11];
    let subject = adapters::rn::sandbox::Register::persons()[0].digits(&mut b).to_owned();
    let headers = [
        ("x-legal-basis", "BOSA/LRA/2024"),
        ("x-purpose", purpose),
        ("x-subject", subject.as_str()),
        ("x-end-user", end_user),
    ];
    send(&h.client(who), Method::GET, "/rn/person", &headers, Bytes::new()).await.unwrap()
}

fn request(h: &Harness, id: &str, matrix: &str, user: &str, service: &str, purpose: &str, fields: &[&str]) -> Value {
    json!({
        "id": id, "instrument": matrix, "end_user": user, "service": service,
        "purposes": [purpose], "fields": fields, "justification": "an urgent case",
        "valid_until": day(h, 60),
    })
}

/// 1. Exceptional access: no self-approval, no backdating, no service outside the matrix, and
/// consent whatever the instrument.
#[tokio::test]
async fn an_exceptional_access_cannot_be_self_approved() {
    let h = Harness::start().await.unwrap();
    // A company files on the LRA matrix, backdating the advice: the date is refused outright.
    let mut backdated = request(&h, "x-co-1", "BOSA/LRA/2024", "clerk", "rn.person", "MARKETING", &["names"]);
    backdated["advice_date"] = json!(day(&h, -8));
    let a = h.ctl("company", Method::POST, "/exceptional-accesses", Some(backdated)).await;
    assert_eq!(a.code(), Some("REQUEST_INVALID"), "{}", a.text());
    // Filed without a date, it does nothing: the company cannot advise on it, and a month
    // later (no advice) the National Register still refuses.
    let body = request(&h, "x-co-1", "BOSA/LRA/2024", "clerk", "rn.person", "MARKETING", &["names"]);
    let a = h.ctl("company", Method::POST, "/exceptional-accesses", Some(body)).await;
    assert_eq!(a.status, StatusCode::CREATED, "{}", a.text());
    let advice = json!({ "reference": "self", "favourable": true });
    let a = h.ctl("company", Method::POST, "/exceptional-accesses/x-co-1/advice", Some(advice.clone())).await;
    assert_eq!(a.code(), Some("ADMIN_ROLE_MISSING"), "{}", a.text());
    assert!(a.text().contains("privacy office of rn (0362.000.139)"), "{}", a.text());
    h.demo.gateway.policy.advance_clock(Duration::from_secs(30 * 86_400));
    let a = rn_person(&h, "company", "clerk", "MARKETING").await;
    assert_eq!(a.status, StatusCode::FORBIDDEN, "{}", a.text());
    h.demo.gateway.policy.reset_clock();

    // SPF Finances (a federal authority) owns its matrix: it remarks on a request on it.
    let body = request(
        &h,
        "x-fin-1",
        "SPF-FIN/MATRIX/2017",
        "analyst-9",
        "patrimony.property",
        "FRAUD_INVESTIGATION",
        &["parcel"],
    );
    let a = h.ctl("spf-finances", Method::POST, "/exceptional-accesses", Some(body)).await;
    assert_eq!(a.status, StatusCode::CREATED, "{}", a.text());
    let a = h.ctl("spf-finances", Method::POST, "/exceptional-accesses/x-fin-1/advice", Some(advice.clone())).await;
    assert_eq!(a.code(), Some("ADMIN_ROLE_MISSING"), "its SSIPVP advises, not the data owner: {}", a.text());
    let a = h.ctl("fin-ssipvp", Method::POST, "/exceptional-accesses/x-fin-1/advice", Some(advice.clone())).await;
    assert_eq!(a.status, StatusCode::OK, "its privacy office: {}", a.text());
    let remark = json!({ "remark": "not proportionate" });
    let a = h.ctl("spf-finances", Method::POST, "/exceptional-accesses/x-fin-1/remark", Some(remark)).await;
    assert_eq!(a.status, StatusCode::OK, "{}", a.text());

    // A service of another source under a matrix: refused, whoever files it.
    for (who, matrix) in [("bank-a", "SPF-FIN/MATRIX/2017"), ("bosa", "BOSA/LRA/2024")] {
        let mut body = request(&h, "x-pens", matrix, "u", "sigedis.pensions", "MARKETING", &["planType"]);
        body["org"] = json!("0456123494");
        let a = h.ctl(who, Method::POST, "/exceptional-accesses", Some(body)).await;
        let expected = if who == "bank-a" { "POLICY_INVALID" } else { "ADMIN_ROLE_MISSING" };
        assert_eq!(a.code(), Some(expected), "{who}: {}", a.text());
    }
    let body = request(&h, "x-pens", "SPF-FIN/MATRIX/2017", "u", "sigedis.pensions", "MARKETING", &["planType"]);
    let a = h.ctl("bank-a", Method::POST, "/exceptional-accesses", Some(body)).await;
    assert_eq!(a.code(), Some("POLICY_INVALID"));
    assert!(a.text().contains("is not a service of the sources of 'SPF-FIN/MATRIX/2017' (patrimony)"), "{}", a.text());

    // An exceptional access on a consent-based source still needs the citizen's consent:
    // Sigedis opens a matrix, a bank obtains an approved access, and without consent the call
    // is refused.
    let matrix = json!({
        "reference": "SIGEDIS/MATRIX/2026", "kind": "access-matrix", "title": "Sigedis internal matrix",
        "source": "sigedis", "status": "active",
    });
    let a = h.ctl("sigedis", Method::POST, "/instruments", Some(matrix)).await;
    assert_eq!(a.status, StatusCode::CREATED, "{}", a.text());
    let body = request(
        &h,
        "x-bank",
        "SIGEDIS/MATRIX/2026",
        "adviser-1",
        "sigedis.pensions",
        "SUPPLEMENTARY_PENSION_INFO",
        &["planType"],
    );
    let a = h.ctl("bank-a", Method::POST, "/exceptional-accesses", Some(body)).await;
    assert_eq!(a.status, StatusCode::CREATED, "{}", a.text());
    let a = h.ctl("sigedis", Method::POST, "/exceptional-accesses/x-bank/advice", Some(advice)).await;
    assert_eq!(a.status, StatusCode::OK, "{}", a.text());
    h.demo.gateway.policy.advance_clock(Duration::from_secs(8 * 86_400));
    let subject = person();
    let headers = [
        ("x-legal-basis", "SIGEDIS/MATRIX/2026"),
        ("x-purpose", "SUPPLEMENTARY_PENSION_INFO"),
        ("x-subject", subject.as_str()),
        ("x-end-user", "adviser-1"),
    ];
    let a = send(&h.client("bank-a"), Method::GET, "/sigedis/pensions", &headers, Bytes::new()).await.unwrap();
    assert_eq!(a.code(), Some("CONSENT_MISSING"), "{}", a.text());
}

/// 2. A child is never more in force than its parent.
#[tokio::test]
async fn revoking_or_suspending_a_parent_stops_its_children() {
    let h = Harness::start().await.unwrap();
    let subject = person();
    sigedis_consent(&h, &subject).await.unwrap();
    assert_eq!(sigedis(&h.client("bank-a"), &subject, &[]).await.unwrap().status, StatusCode::OK);
    let a = transition(&h, "sigedis", "CSI/SSH/19/004", "suspended", Some("all activities suspended")).await;
    assert_eq!(a.status, StatusCode::OK, "{}", a.text());
    let a = sigedis(&h.client("bank-a"), &subject, &[]).await.unwrap();
    assert_eq!(a.code(), Some("FLOW_SUSPENDED"), "{}", a.text());
    assert!(a.text().contains("'CSI/SSH/19/004' is suspended (all activities suspended)"), "{}", a.text());
    let a = transition(&h, "sigedis", "CSI/SSH/19/004", "active", None).await;
    assert_eq!(a.status, StatusCode::OK, "{}", a.text());
    assert_eq!(sigedis(&h.client("bank-a"), &subject, &[]).await.unwrap().status, StatusCode::OK);

    // The CSI deliberation behind the insurer's DIV convention is revoked.
    let (plate, _) = gateway::demo::div_vehicle().unwrap();
    let call = || async {
        let headers = [("x-legal-basis", "DIV/CONV/2023/0042"), ("x-purpose", "INSURANCE_CLAIM")];
        let body = Bytes::from(adapters::div::request_by_plate(&plate));
        send(&h.client("insurer"), Method::POST, "/div/vehicle", &headers, body).await.unwrap()
    };
    assert_eq!(call().await.status, StatusCode::OK);
    let a = transition(&h, "div", "CSI/AF/18/2023", "revoked", Some("the CSI withdrew its authorization")).await;
    assert_eq!(a.status, StatusCode::OK, "{}", a.text());
    let a = call().await;
    assert_eq!(a.code(), Some("INSTRUMENT_NOT_ACTIVE"), "{}", a.text());
    assert!(a.text().contains("CSI/AF/18/2023"), "{}", a.text());
    let public = h.public_client();
    let doc = send(&public, Method::GET, "/public/instruments", &[], Bytes::new()).await.unwrap().json().unwrap();
    let refs: Vec<&str> =
        doc["instruments"].as_array().unwrap().iter().map(|i| i["reference"].as_str().unwrap()).collect();
    assert!(!refs.iter().any(|r| r.starts_with("DIV/CONV") || *r == "CSI/AF/18/2023"), "{refs:?}");
}

/// 3. A statutory ceiling binds every instrument, whoever registers it.
#[tokio::test]
async fn a_statutory_ceiling_cannot_be_widened() {
    let h = Harness::start().await.unwrap();
    let widening = json!({
        "reference": "VL/WIDE/1", "kind": "statutory", "title": "widening", "law": "none", "article": "1",
        "status": "active",
        "grants": [{ "id": "wide-1", "recipient": {"org": "0765432146"}, "service": "accounts.iban",
                     "purposes": ["MARKETING"], "fields": ["serviceIban"] }],
    });
    for who in ["digitaal-vlaanderen", "admin"] {
        let a = h.ctl(who, Method::POST, "/instruments", Some(widening.clone())).await;
        assert_eq!(a.code(), Some("POLICY_INVALID"), "{who}: {}", a.text());
        let text = a.text();
        assert!(text.contains("exceeds the statutory ceiling of source 'accounts'"), "{text}");
        assert!(text.contains("recipients are limited to flemish-instance"), "{text}");
        assert!(text.contains("purpose 'MARKETING' is not allowed"), "{text}");
        assert!(text.contains("needs the data subject's consent"), "{text}");
    }
    // A data owner cannot declare or change a ceiling itself.
    let source = json!({ "id": "open-data", "name": "x", "owner": "0316000165", "ceiling": { "basis": "none" } });
    let a = h.ctl("digitaal-vlaanderen", Method::POST, "/sources", Some(source)).await;
    assert_eq!(a.code(), Some("ADMIN_ROLE_MISSING"), "{}", a.text());
    // The company is refused by the data plane too, by the ceiling itself.
    let headers = [
        ("x-legal-basis", "VL/DECR-2008-07-18/ART-5-5"),
        ("x-purpose", "BENEFIT_PAYMENT"),
        ("x-subject", "85073003328"),
    ];
    let body = Bytes::from(json!({ "publicService": "GROEIPAKKET" }).to_string());
    let a = send(&h.client("company"), Method::POST, "/accounts/iban", &headers, body).await.unwrap();
    assert_eq!(a.code(), Some("LEGAL_BASIS_NOT_APPLICABLE"), "{}", a.text());
    assert!(a.text().contains("law that governs this source"), "{}", a.text());
}

fn general_protocol(reference: &str, elements: &[&str], status: &str) -> Value {
    let stated: serde_json::Map<String, Value> =
        elements.iter().map(|e| ((*e).to_owned(), json!(format!("the protocol's {e}")))).collect();
    json!({
        "reference": reference, "kind": "general", "source": "associations", "status": status,
        "title": "General protocol on association data for umbrella organisations",
        "authority": "VL-DPO", "number": "2026/3", "date": "2026-05-01", "eligible": ["umbrella-organisation"],
        "protocol": stated,
    })
}

/// The keys of the 13 elements of art. 8, in order.
fn elements() -> Vec<&'static str> {
    policies::model::ProtocolElements::default().elements().iter().map(|(_, key, _)| *key).collect()
}

/// 4. A general protocol carries the 13 elements, starts as a draft, and enters into force only
/// after the DPO's favourable advice, which the data owner cannot write into it itself.
#[tokio::test]
async fn a_general_protocol_needs_the_13_elements() {
    let h = Harness::start().await.unwrap();
    let all = elements();
    for stated in [&[][..], &all[..2]] {
        let a = h
            .ctl(
                "digitaal-vlaanderen",
                Method::POST,
                "/instruments",
                Some(general_protocol("VL/GP/1", stated, "draft")),
            )
            .await;
        assert_eq!(a.code(), Some("PROTOCOL_INCOMPLETE"), "{}", a.text());
        assert!(a.text().contains("protocol lacks element (13) specific_measures"), "{}", a.text());
    }
    let mut own_advice = general_protocol("VL/GP/1", &all, "draft");
    own_advice["dpo_advice"] = json!("DPO-DV-2026-3");
    let a = h.ctl("digitaal-vlaanderen", Method::POST, "/instruments", Some(own_advice)).await;
    assert_eq!(a.code(), Some("REQUEST_INVALID"), "{}", a.text());
    assert!(a.text().contains("dpo_advice are recorded by the steps of the procedure"), "{}", a.text());
    let a = h
        .ctl("digitaal-vlaanderen", Method::POST, "/instruments", Some(general_protocol("VL/GP/1", &all, "active")))
        .await;
    assert_eq!(a.code(), Some("TRANSITION_NOT_ALLOWED"), "never created in force: {}", a.text());
    let a = h
        .ctl("digitaal-vlaanderen", Method::POST, "/instruments", Some(general_protocol("VL/GP/1", &all, "draft")))
        .await;
    assert_eq!(a.status, StatusCode::CREATED, "{}", a.text());
    let a = transition(&h, "digitaal-vlaanderen", "VL/GP/1", "active", None).await;
    assert_eq!(a.code(), Some("TRANSITION_NOT_ALLOWED"), "no DPO advice yet: {}", a.text());
}

/// 5. An import never wipes the policy, nor the importer's own role.
#[tokio::test]
async fn an_import_cannot_wipe_the_policy() {
    let h = Harness::start().await.unwrap();
    let admin = h.control_client("admin");
    let v = h.demo.gateway.policy.version();
    let import = |path: &'static str, body: String| {
        let admin = &admin;
        async move {
            let a = send(admin, Method::POST, path, &[], Bytes::from(body)).await.unwrap();
            tests::openapi::check("POST", path, &a);
            a
        }
    };
    let a = import("/policy/import", String::new()).await;
    assert_eq!(a.code(), Some("REQUEST_INVALID"), "{}", a.text());
    let a = import("/policy/import", "# nothing\n".to_owned()).await;
    assert_eq!(a.code(), Some("POLICY_INVALID"), "{}", a.text());
    assert!(a.text().contains("would remove the whole policy"), "{}", a.text());
    let exported = send(&admin, Method::GET, "/policy/export", &[], Bytes::new()).await.unwrap().text();
    // Without the integrator (ours is the last organisation of the seeds).
    let mut policy: policies::model::Policy = toml::from_str(&exported).unwrap();
    policy.organisations.retain(|o| o.kind != policies::model::OrgKind::Integrator);
    let a = import("/policy/import", toml::to_string(&policy).unwrap()).await;
    assert_eq!(a.code(), Some("POLICY_INVALID"), "{}", a.text());
    assert!(a.text().contains("no integrator"), "{}", a.text());
    assert_eq!(h.demo.gateway.policy.version(), v, "nothing changed");
    // A dry run shows the difference and changes nothing.
    let mut policy: policies::model::Policy = toml::from_str(&exported).unwrap();
    policy.instruments.retain(|i| i.reference != "BOSA/LRA/2024");
    policy.roles.clear();
    let a = import("/policy/import?dry_run=true", toml::to_string(&policy).unwrap()).await;
    assert_eq!(a.status, StatusCode::OK, "{}", a.text());
    let diff = &a.json().unwrap()["diff"];
    assert_eq!(diff["instruments"]["removed"], json!(["BOSA/LRA/2024"]));
    assert_eq!(diff["roles"]["removed"].as_array().unwrap().len(), 3);
    assert_eq!(diff["organisations"]["removed"], json!([]));
    assert_eq!(h.demo.gateway.policy.version(), v, "a dry run changes nothing");
    // Everything still works, the integrator included.
    assert_eq!(association(&h.client(ASSOC_CALLER), &vcode(), &[]).await.unwrap().status, StatusCode::OK);
    assert_eq!(h.ctl("admin", Method::GET, "/policy/export", None).await.status, StatusCode::OK);
}

/// 6. A deliberation that replaces a protocol stops it when it comes into force.
#[tokio::test]
async fn a_deliberation_replaces_a_protocol() {
    let h = Harness::start().await.unwrap();
    let deliberation = json!({
        "reference": "VTC/2026/12", "kind": "deliberation", "source": "associations", "status": "draft",
        "title": "Deliberation of the Flemish committee replacing protocol 2022/017",
        "authority": "VTC", "number": "2026/12", "date": "2026-09-01", "replaces": ["VL/PROT/2022/017"],
    });
    let a = h.ctl("digitaal-vlaanderen", Method::POST, "/instruments", Some(deliberation)).await;
    assert_eq!(a.status, StatusCode::CREATED, "{}", a.text());
    // In draft it replaces nothing yet.
    assert_eq!(association(&h.client(ASSOC_CALLER), &vcode(), &[]).await.unwrap().status, StatusCode::OK);
    let a = transition(&h, "digitaal-vlaanderen", "VTC/2026/12", "active", None).await;
    assert_eq!(a.status, StatusCode::OK, "{}", a.text());
    let a = association(&h.client(ASSOC_CALLER), &vcode(), &[]).await.unwrap();
    assert_eq!(a.code(), Some("INSTRUMENT_NOT_ACTIVE"), "{}", a.text());
    assert!(a.text().contains("replaced by a deliberation now in force: 'VTC/2026/12' is active"), "{}", a.text());
}

/// 7. Reading the control plane is need to know.
#[tokio::test]
async fn reads_are_need_to_know() {
    let h = Harness::start().await.unwrap();
    let items = |a: &Answer| a.json().unwrap()["items"].as_array().unwrap().clone();
    // The company has no end users' roles of its own and sees nobody else's.
    let a = h.ctl("company", Method::GET, "/roles", None).await;
    assert_eq!(items(&a), Vec::<Value>::new(), "{}", a.text());
    let a = h.ctl("company", Method::GET, "/exceptional-accesses", None).await;
    assert_eq!(items(&a), Vec::<Value>::new(), "{}", a.text());
    let a = h.ctl("company", Method::GET, "/instruments/SPF-FIN%2FMATRIX%2F2017", None).await;
    assert_eq!(a.code(), Some("ADMIN_ROLE_MISSING"), "{}", a.text());
    // The municipality sees its own officers; BOSA those its matrix requires; SPF Finances
    // its own and its matrix's exceptional access.
    let a = h.ctl("municipality", Method::GET, "/roles", None).await;
    assert_eq!(items(&a).len(), 2);
    let a = h.ctl("bosa", Method::GET, "/roles", None).await;
    assert!(
        items(&a).iter().all(|r| r["role"] == "local-registration-officer") && items(&a).len() == 2,
        "{}",
        a.text()
    );
    let a = h.ctl("spf-finances", Method::GET, "/exceptional-accesses", None).await;
    assert_eq!(items(&a).len(), 1);
    let a = h.ctl("bank-a", Method::GET, "/instruments", None).await;
    let refs: Vec<String> = items(&a).iter().map(|i| i["reference"].as_str().unwrap().to_owned()).collect();
    assert_eq!(refs, ["CSI/SSH/19/004", "CSI/SSH/19/004/FI"], "what names bank A");
    let a = h.ctl("admin", Method::GET, "/instruments", None).await;
    assert_eq!(items(&a).len(), h.demo.gateway.policy.model().instruments.len());
}

/// 8. A NISS implying a birth in the future is invalid everywhere.
#[tokio::test]
async fn a_future_birth_date_is_not_a_valid_niss() {
    let h = Harness::start().await.unwrap();
    for niss in ["27012340986", "84020402612"] {
        let a = sigedis(&h.client("bank-a"), niss, &[]).await.unwrap();
        assert_eq!(a.code(), Some("SUBJECT_INVALID"), "{niss}: {}", a.text());
        assert!(a.text().contains("in the future") && !a.text().contains(niss), "{}", a.text());
        let body = tests::sigedis_consent_body(niss).unwrap();
        let a = h.ctl("citizen-portal", Method::POST, "/consents", Some(body)).await;
        assert_eq!(a.status, StatusCode::BAD_REQUEST, "{niss}: {}", a.text());
        let portal = h.control_client("citizen-portal");
        let a = send(&portal, Method::GET, "/audit/report", &[("x-subject", niss)], Bytes::new()).await.unwrap();
        assert_eq!(a.code(), Some("SUBJECT_INVALID"), "{niss}: {}", a.text());
    }
}
