//! The seeds' procedures played end to end through the control plane, with the evidence each
//! step keeps and a refusal for each step made by the wrong role or out of order:
//!
//! * seed 002 — the yearly re-validation of consents on the Flemish account and contact
//!   sources (the protocol's DPO advice is in `control_plane.rs`);
//! * seed 003 — the LRA usage convention signed by a new municipality and countersigned by
//!   BOSA, then ended; the matrix: a role's longest validity, one officer's role withdrawn by
//!   BOSA, the contact items that need the person's consent, the matrix suspended and resumed;
//! * seed 004 — "where" and "when" of an access-matrix grant, and a DAM sheet through ICT's
//!   and the SSIPVP's advice to its tacit authorization, remark and withdrawal;
//! * the report "who consulted the data about us" for an enterprise and an association, with
//!   their own certificates.
//!
//! (Seeds 000 and 001 — the DIV convention and the Sigedis adhesion — are in
//! `control_plane.rs`.)

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use bytes::Bytes;
use gateway::demo::{ACCOUNTS_LEGAL_BASIS, ACCOUNTS_PURPOSE, ASSOC_CALLER, DIV_CALLER, DIV_LEGAL_BASIS, DIV_PURPOSE};
use http::{Method, StatusCode};
use policies::model::Env;
use serde_json::{Value, json};
use tests::{ASSOCIATION, ASSOCIATION_KBO, Answer, HOLDER, Harness, MUNICIPALITY_B, MUNICIPALITY_B_KBO, send};

const DAY: u64 = 86_400;

fn enc(reference: &str) -> String {
    reference.replace('/', "%2F")
}

fn citizen(i: usize) -> String {
    let mut d = [0u8; 11];
    adapters::accounts::sandbox::Register::persons()[i].digits(&mut d).to_owned()
}

fn today(h: &Harness) -> policies::model::Date {
    policies::model::Date::from_days((h.demo.gateway.policy.now_ms() / 86_400_000) as i64).unwrap()
}

fn days_from(d: policies::model::Date, n: i64) -> String {
    policies::model::Date::from_days(d.days() + n).unwrap().to_string()
}

fn detail(a: &Answer) -> String {
    a.json().unwrap()["detail"].as_str().unwrap_or_default().to_owned()
}

async fn give_consent(h: &Harness, subject: &str, recipient: Value, service: &str, purpose: &str) -> String {
    // The Flemish sources' values may serve any public service the citizen named (art. 5/4).
    let scope: Vec<&str> = if service.starts_with("rn.") { vec![] } else { vec!["*"] };
    let body = json!({
        "subject": subject, "recipient": recipient, "service": service, "purpose": purpose,
        "scope": scope, "valid_until": "2030-12-31", "evidence": "portal-session",
    });
    let a = h.ctl("citizen-portal", Method::POST, "/consents", Some(body)).await;
    assert_eq!(a.status, StatusCode::CREATED, "{}", a.text());
    a.json().unwrap()["id"].as_str().unwrap().to_owned()
}

async fn account(h: &Harness, subject: &str) -> Answer {
    let headers = [("x-legal-basis", ACCOUNTS_LEGAL_BASIS), ("x-purpose", ACCOUNTS_PURPOSE), ("x-subject", subject)];
    let body = Bytes::from(json!({ "publicService": "GROEIPAKKET" }).to_string());
    send(&h.client(ASSOC_CALLER), Method::POST, "/accounts/iban", &headers, body).await.unwrap()
}

async fn contact(h: &Harness, subject: &str) -> Answer {
    let headers = [
        ("x-legal-basis", gateway::demo::CONTACTS_LEGAL_BASIS),
        ("x-purpose", gateway::demo::CONTACTS_PURPOSE),
        ("x-subject", subject),
    ];
    let body = Bytes::from(json!({ "publicService": "ZORGBUDGET" }).to_string());
    send(&h.client(ASSOC_CALLER), Method::POST, "/contacts/contact", &headers, body).await.unwrap()
}

/// Seed 002, art. 5/6 and 7/5: the entity invites the citizen to validate at least once a
/// year. The account source keeps the rule of the decree (invite; the consent keeps serving);
/// here the contact source sets "stop" (the consent no longer serves once the year passed).
#[tokio::test]
async fn consents_due_for_revalidation_are_listed_invited_and_stopped_where_the_source_says() {
    let h = Harness::with(
        &[],
        Some(|name, text| {
            if name == "flemish-sources.toml" {
                let cut = text.find("  # Art. 7/5: the same yearly invitation.").unwrap();
                let (head, tail) = text.split_at(cut);
                format!("{head}{}", tail.replacen("rule = \"invite\"", "rule = \"stop\"", 1))
            } else {
                text
            }
        }),
    )
    .await
    .unwrap();
    let (c0, c1) = (citizen(0), citizen(1));
    let flemish = json!({ "kind": "flemish-instance" });
    let acc = give_consent(&h, &c0, flemish.clone(), "accounts.iban", ACCOUNTS_PURPOSE).await;
    let con = give_consent(&h, &c0, flemish.clone(), "contacts.contact", gateway::demo::CONTACTS_PURPOSE).await;
    let _other = give_consent(&h, &c1, flemish, "accounts.iban", ACCOUNTS_PURPOSE).await;
    assert_eq!(account(&h, &c0).await.status, StatusCode::OK);
    assert_eq!(contact(&h, &c0).await.status, StatusCode::OK);

    // Nothing is due yet; the portal shows when each consent falls due.
    let a = h.ctl("digitaal-vlaanderen", Method::GET, "/consents/due?source=accounts", None).await;
    assert_eq!(a.status, StatusCode::OK, "{}", a.text());
    assert_eq!((a.json().unwrap()["count"].clone(), a.json().unwrap()["rule"].clone()), (json!(0), json!("invite")));
    let a = send(&h.control_client("citizen-portal"), Method::GET, "/consents", &[("x-subject", &c0)], Bytes::new())
        .await
        .unwrap();
    let list = a.json().unwrap();
    let r = &list["consents"][0]["revalidation"];
    assert_eq!((r["every_days"].clone(), r["due"].clone()), (json!(365), json!(false)), "{list}");
    // Only the data owner of the source (or the integrator) lists them.
    for who in ["sigedis", ASSOC_CALLER, "citizen-portal"] {
        let a = h.ctl(who, Method::GET, "/consents/due?source=accounts", None).await;
        assert_eq!(a.code(), Some("ADMIN_ROLE_MISSING"), "{who}: {}", a.text());
    }
    let a = h.ctl("sigedis", Method::GET, "/consents/due?source=sigedis", None).await;
    assert_eq!(a.code(), Some("REQUEST_INVALID"), "a source without re-validation: {}", a.text());

    // A year and a day later.
    h.demo.gateway.policy.advance_clock(Duration::from_secs(366 * DAY));
    let a = h.ctl("digitaal-vlaanderen", Method::GET, "/consents/due?source=accounts", None).await;
    let due = a.json().unwrap();
    assert_eq!(due["count"], 2, "{due}");
    let ids: Vec<&str> = due["items"].as_array().unwrap().iter().map(|i| i["id"].as_str().unwrap()).collect();
    assert!(ids.contains(&acc.as_str()) && due["items"][0]["invited_at"].is_null(), "{due}");
    // The list names persons: it is in the trail with them.
    let records = gateway::audit::verify::read_records(&h.demo.config.audit.dir).unwrap();
    let listed = records.iter().rev().find(|r| r.record.operation == "GET /consents/due").unwrap();
    assert_eq!(listed.record.caller.as_deref(), Some("0316000165"));
    assert_eq!(listed.record.subjects.len(), 2);
    assert_eq!(
        listed.record.justification.as_deref(),
        Some("consents of source accounts due for re-validation (invite rule), to invite the citizens")
    );
    // Invite only: the account consent still serves; the contact source stops using its own.
    assert_eq!(account(&h, &c0).await.status, StatusCode::OK);
    let a = contact(&h, &c0).await;
    assert_eq!((a.status, a.code()), (StatusCode::FORBIDDEN, Some("CONSENT_REVALIDATION_DUE")), "{}", a.text());
    let a = h.ctl("digitaal-vlaanderen", Method::GET, "/consents/due?source=contacts", None).await;
    assert_eq!((a.json().unwrap()["count"].clone(), a.json().unwrap()["rule"].clone()), (json!(1), json!("stop")));

    // The data owner records the invitation; another data owner cannot.
    let a = h.ctl("sigedis", Method::POST, &format!("/consents/{con}/invite"), None).await;
    assert_eq!(a.code(), Some("ADMIN_ROLE_MISSING"), "{}", a.text());
    let a = h.ctl("digitaal-vlaanderen", Method::POST, &format!("/consents/{con}/invite"), None).await;
    assert_eq!(a.status, StatusCode::OK, "{}", a.text());
    let a = h.ctl("digitaal-vlaanderen", Method::GET, "/consents/due?source=contacts", None).await;
    assert!(a.json().unwrap()["items"][0]["invited_at"].is_string(), "{}", a.text());
    // The citizen re-validates through the portal: the consent serves again, nothing is due.
    let a = h.ctl("citizen-portal", Method::POST, &format!("/consents/{con}/revalidate"), None).await;
    assert_eq!(a.status, StatusCode::OK, "{}", a.text());
    assert_eq!(contact(&h, &c0).await.status, StatusCode::OK);
    let a = h.ctl("digitaal-vlaanderen", Method::GET, "/consents/due?source=contacts", None).await;
    assert_eq!(a.json().unwrap()["count"], 0, "{}", a.text());
    let a = send(&h.control_client("citizen-portal"), Method::GET, "/consents", &[("x-subject", &c0)], Bytes::new())
        .await
        .unwrap();
    let history: Vec<String> =
        a.json().unwrap()["consents"].as_array().unwrap().iter().find(|c| c["consent"]["id"] == con.as_str()).unwrap()
            ["history"]
            .as_array()
            .unwrap()
            .iter()
            .map(|e| e["event"].as_str().unwrap().to_owned())
            .collect();
    assert_eq!(history, ["given", "invited", "revalidated"]);
}

async fn rn_person(h: &Harness, basis: &str, purpose: &str, end_user: &str, who: &str) -> Answer {
    let mut b = [0u8; 11];
    let subject = adapters::rn::sandbox::Register::persons()[0].digits(&mut b).to_owned();
    let headers =
        [("x-legal-basis", basis), ("x-purpose", purpose), ("x-subject", subject.as_str()), ("x-end-user", end_user)];
    send(&h.client(who), Method::GET, "/rn/person", &headers, Bytes::new()).await.unwrap()
}

fn rn_subject() -> String {
    let mut b = [0u8; 11];
    adapters::rn::sandbox::Register::persons()[0].digits(&mut b).to_owned()
}

/// Seed 003 from its first step: "access to the LRA application is subject to the signature of
/// this usage convention by the user". A municipality new to the gateway signs it; BOSA
/// countersigns; its officer works; the convention ends by the parties' agreement.
#[tokio::test]
async fn a_municipality_signs_the_lra_usage_convention_and_bosa_countersigns() {
    let h = Harness::start().await.unwrap();
    let t = today(&h);
    let basis = "BOSA/LRA/2024";
    let b = MUNICIPALITY_B_KBO;
    let org = json!({ "kbo": b, "name": "Municipality B (synthetic)", "kind": "local-authority" });
    assert_eq!(h.ctl("admin", Method::POST, "/organisations", Some(org)).await.status, StatusCode::CREATED);
    // Its employer gives its officer the role (narrowing only: it opens nothing by itself).
    let role = json!({ "org": b, "end_user": "officer-b1", "role": "local-registration-officer",
                       "valid_from": days_from(t, 0), "valid_until": days_from(t, 300) });
    let a = h.ctl(MUNICIPALITY_B, Method::POST, "/roles", Some(role)).await;
    assert_eq!(a.status, StatusCode::OK, "{}", a.text());
    let call = || rn_person(&h, basis, "LRA_REGISTRATION", "officer-b1", MUNICIPALITY_B);
    assert_eq!(call().await.code(), Some("ADHESION_MISSING"), "not signed");

    // The user signs: the signatory, its capacity, the organisation, a reference.
    let path = format!("/instruments/{}/adhesions", enc(basis));
    let steps = format!("{path}/{b}/transitions");
    let signature = json!({ "org": b, "official_name": "Municipality B (synthetic)", "seat": "Markt 1, 9999 B",
        "requested_by": "Mayor of B (synthetic)", "capacity": "Mayor", "reference": "LRA-2026-0107",
        "modalities_confirmed": true });
    let a = h.ctl("municipality", Method::POST, &path, Some(signature.clone())).await;
    assert_eq!(a.code(), Some("ADMIN_ROLE_MISSING"), "another user cannot sign for B: {}", a.text());
    let mut unconfirmed = signature.clone();
    unconfirmed["modalities_confirmed"] = json!(false);
    let a = h.ctl(MUNICIPALITY_B, Method::POST, &path, Some(unconfirmed)).await;
    assert_eq!(a.code(), Some("POLICY_INVALID"), "{}", a.text());
    let a = h.ctl(MUNICIPALITY_B, Method::POST, &path, Some(signature.clone())).await;
    assert_eq!(a.status, StatusCode::CREATED, "{}", a.text());
    let item = a.json().unwrap()["item"].clone();
    assert_eq!((item["state"].clone(), item["date"].clone()), (json!("requested"), json!(t.to_string())));
    assert_eq!(
        (item["requested_by"].clone(), item["capacity"].clone()),
        (json!("Mayor of B (synthetic)"), json!("Mayor"))
    );
    let a = h.ctl(MUNICIPALITY_B, Method::POST, &path, Some(signature)).await;
    assert_eq!(a.code(), Some("ALREADY_EXISTS"));
    assert_eq!(call().await.code(), Some("ADHESION_MISSING"), "signed by the user only");

    // No examination, no onboarding: BOSA countersigns, with the signed convention.
    let countersigned = json!({ "to": "active", "reason": "countersigned by the DG SD",
        "documents": [{ "title": "LRA usage convention signed by both parties", "sha256": "4b".repeat(32) }] });
    let a = h
        .ctl(
            MUNICIPALITY_B,
            Method::POST,
            &steps,
            Some(json!({ "to": "onboarding", "documents": [{ "title": "x", "reference": "y" }] })),
        )
        .await;
    assert_eq!(a.code(), Some("TRANSITION_NOT_ALLOWED"), "{}", a.text());
    assert!(a.text().contains("from requested the possible steps are: active, refused, withdrawn"), "{}", a.text());
    let a = h.ctl(MUNICIPALITY_B, Method::POST, &steps, Some(countersigned.clone())).await;
    assert_eq!(a.code(), Some("ADMIN_ROLE_MISSING"), "B cannot countersign for BOSA: {}", a.text());
    let a = h.ctl("admin", Method::POST, &steps, Some(countersigned.clone())).await;
    assert_eq!(a.code(), Some("ADMIN_ROLE_MISSING"), "nor the integrator: {}", a.text());
    let a = h.ctl("bosa", Method::POST, &steps, Some(json!({ "to": "active" }))).await;
    assert_eq!(a.code(), Some("REQUEST_INVALID"), "the countersigned convention is evidence: {}", a.text());
    let a = h.ctl("bosa", Method::POST, &steps, Some(countersigned)).await;
    assert_eq!(a.status, StatusCode::OK, "{}", a.text());
    let item = a.json().unwrap()["item"].clone();
    let kept: Vec<(&str, &str, &str)> = item["steps"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| (s["to"].as_str().unwrap(), s["by"].as_str().unwrap(), s["role"].as_str().unwrap()))
        .collect();
    assert_eq!(kept, [("requested", b, "the organisation itself"), ("active", "0362000139", "data owner")]);
    assert_eq!(item["steps"][1]["documents"][0]["sha256"], "4b".repeat(32));
    assert_eq!(item["active_since"], json!(t.to_string()));
    let a = call().await;
    assert_eq!(a.status, StatusCode::OK, "{}", a.text());
    assert!(a.json().unwrap().get("address").is_some(), "the matrix's registration fields");
    // The usage convention and its signatories are not published.
    let public = send(&h.public_client(), Method::GET, "/public/instruments", &[], Bytes::new()).await.unwrap();
    assert!(!public.text().contains(basis) && !public.text().contains("Mayor of B"), "{}", public.text());

    // Ended by either party with a reason; nobody else; final.
    let end = json!({ "to": "withdrawn", "reason": "ended by common agreement on 2026-12-31" });
    let a = h.ctl("municipality", Method::POST, &steps, Some(end.clone())).await;
    assert_eq!(a.code(), Some("ADMIN_ROLE_MISSING"), "{}", a.text());
    let a = h.ctl("bosa", Method::POST, &steps, Some(json!({ "to": "withdrawn" }))).await;
    assert_eq!(a.code(), Some("REQUEST_INVALID"), "{}", a.text());
    let a = h.ctl("bosa", Method::POST, &steps, Some(end)).await;
    assert_eq!(a.status, StatusCode::OK, "{}", a.text());
    assert_eq!(a.json().unwrap()["item"]["steps"][2]["reason"], "ended by common agreement on 2026-12-31");
    assert_eq!(call().await.code(), Some("ADHESION_MISSING"), "at once");
    let a = h
        .ctl(
            "bosa",
            Method::POST,
            &steps,
            Some(json!({ "to": "active", "documents": [{ "title": "x", "reference": "y" }] })),
        )
        .await;
    assert_eq!(a.code(), Some("TRANSITION_NOT_ALLOWED"), "final: {}", a.text());
    // The first municipality's signature was never touched.
    assert_eq!(rn_person(&h, basis, "LRA_REGISTRATION", "lra-officer-1", "municipality").await.status, StatusCode::OK);
}

/// Seed 003: the role "gestionnaire local d'enregistrement" has a limited validity set by
/// BOSA; BOSA may deactivate one end user's rights; e-mail, phone and language only with the
/// person's consent.
#[tokio::test]
async fn the_lra_roles_are_bounded_withdrawn_by_bosa_and_the_contact_items_need_consent() {
    let h = Harness::start().await.unwrap();
    let t = today(&h);
    let basis = "BOSA/LRA/2024";
    let role = |user: &str, from: String, until: String| {
        json!({ "org": "0207000176", "end_user": user, "role": "local-registration-officer",
                "valid_from": from, "valid_until": until })
    };
    // A role longer than BOSA allows is refused, naming the limit; within it, granted.
    let a = h
        .ctl("municipality", Method::POST, "/roles", Some(role("lra-officer-3", days_from(t, 0), days_from(t, 730))))
        .await;
    assert_eq!(a.code(), Some("POLICY_INVALID"), "{}", a.text());
    assert!(detail(&a).contains("'BOSA/LRA/2024' allows at most 366"), "{}", a.text());
    let a = h
        .ctl("municipality", Method::POST, "/roles", Some(role("lra-officer-3", days_from(t, 0), days_from(t, 364))))
        .await;
    assert_eq!(a.status, StatusCode::OK, "{}", a.text());
    assert_eq!(rn_person(&h, basis, "LRA_REGISTRATION", "lra-officer-3", "municipality").await.status, StatusCode::OK);

    // BOSA, the data owner, deactivates officer 1's role; nobody else but the employer may.
    let withdraw = json!({ "org": "0207000176", "end_user": "lra-officer-1", "role": "local-registration-officer",
                           "reason": "identification procedure not followed (case 2026/44)" });
    for who in ["sigedis", ASSOC_CALLER] {
        let a = h.ctl(who, Method::POST, "/roles/withdraw", Some(withdraw.clone())).await;
        assert_eq!(a.code(), Some("ADMIN_ROLE_MISSING"), "{who}: {}", a.text());
    }
    assert_eq!(rn_person(&h, basis, "LRA_REGISTRATION", "lra-officer-1", "municipality").await.status, StatusCode::OK);
    let a = h.ctl("bosa", Method::POST, "/roles/withdraw", Some(withdraw.clone())).await;
    assert_eq!(a.status, StatusCode::OK, "{}", a.text());
    let w = &a.json().unwrap()["item"]["withdrawn"];
    assert_eq!((w["by"].clone(), w["role"].clone()), (json!("0362000139"), json!("data owner")), "{w}");
    assert!(w["reason"].as_str().unwrap().contains("case 2026/44") && w["at"].is_string());
    let a = rn_person(&h, basis, "LRA_REGISTRATION", "lra-officer-1", "municipality").await;
    assert_eq!(a.code(), Some("END_USER_ROLE_MISSING"), "{}", a.text());
    let a = h.ctl("bosa", Method::POST, "/roles/withdraw", Some(withdraw)).await;
    assert_eq!(a.code(), Some("TRANSITION_NOT_ALLOWED"), "withdrawn once");
    // The employer cannot simply grant it again; the integrator can.
    let back = role("lra-officer-1", days_from(t, 0), days_from(t, 300));
    let a = h.ctl("municipality", Method::POST, "/roles", Some(back.clone())).await;
    assert_eq!(a.code(), Some("TRANSITION_NOT_ALLOWED"), "{}", a.text());
    let a = h.ctl("bosa", Method::GET, "/roles?org=0207000176", None).await;
    let roles = a.json().unwrap();
    let officer1 = roles["items"].as_array().unwrap().iter().find(|r| r["end_user"] == "lra-officer-1").unwrap();
    assert_eq!(officer1["withdrawn"]["to"], "withdrawn", "BOSA sees the withdrawal: {roles}");
    let a = h.ctl("admin", Method::POST, "/roles", Some(back)).await;
    assert_eq!(a.status, StatusCode::OK, "{}", a.text());
    assert_eq!(rn_person(&h, basis, "LRA_REGISTRATION", "lra-officer-1", "municipality").await.status, StatusCode::OK);
    // The employer deactivates an officer who left.
    let left = json!({ "org": "0207000176", "end_user": "lra-officer-3", "role": "local-registration-officer",
                       "reason": "left the municipality" });
    let a = h.ctl("municipality", Method::POST, "/roles/withdraw", Some(left)).await;
    assert_eq!(a.status, StatusCode::OK, "{}", a.text());
    assert_eq!(a.json().unwrap()["item"]["withdrawn"]["role"], "the organisation itself");
    let a = rn_person(&h, basis, "LRA_REGISTRATION", "lra-officer-3", "municipality").await;
    assert_eq!(a.code(), Some("END_USER_ROLE_MISSING"));

    // Registration data answer without the contact items; those need the person's consent.
    let a = rn_person(&h, basis, "LRA_REGISTRATION", "lra-officer-1", "municipality").await;
    let doc = a.json().unwrap();
    assert!(doc.get("address").is_some() && doc.get("contact").is_none(), "{doc}");
    let a = rn_person(&h, basis, "LRA_CONTACT", "lra-officer-1", "municipality").await;
    assert_eq!(a.code(), Some("CONSENT_MISSING"), "{}", a.text());
    give_consent(&h, &rn_subject(), json!({ "org": "0207000176" }), "rn.person", "LRA_CONTACT").await;
    let a = rn_person(&h, basis, "LRA_CONTACT", "lra-officer-1", "municipality").await;
    assert_eq!(a.status, StatusCode::OK, "{}", a.text());
    let doc = a.json().unwrap();
    let contact = doc["contact"].as_object().unwrap();
    assert!(contact.contains_key("email") && contact.contains_key("phone") && contact.contains_key("language"));
    assert!(doc.get("address").is_none() && doc.get("birthDate").is_none(), "only names and contact: {doc}");

    // BOSA may suspend the matrix (a security measure), with a reason, and resume it.
    let path = format!("/instruments/{}/transitions", enc(basis));
    let a = h.ctl("municipality", Method::POST, &path, Some(json!({ "to": "suspended", "reason": "x" }))).await;
    assert_eq!(a.code(), Some("ADMIN_ROLE_MISSING"));
    let why = "security measures at the user found insufficient";
    let a = h.ctl("bosa", Method::POST, &path, Some(json!({ "to": "suspended", "reason": why }))).await;
    assert_eq!(a.status, StatusCode::OK, "{}", a.text());
    let a = rn_person(&h, basis, "LRA_REGISTRATION", "lra-officer-1", "municipality").await;
    assert_eq!(a.code(), Some("FLOW_SUSPENDED"));
    let a = h.ctl("bosa", Method::POST, &path, Some(json!({ "to": "active", "reason": "measures restored" }))).await;
    assert_eq!(a.status, StatusCode::OK, "{}", a.text());
    let steps = a.json().unwrap()["item"]["steps"].clone();
    assert_eq!(steps.as_array().unwrap().len(), 2, "{steps}");
    assert_eq!((steps[1]["to"].clone(), steps[1]["reason"].clone()), (json!("active"), json!("measures restored")));
    assert_eq!(rn_person(&h, basis, "LRA_REGISTRATION", "lra-officer-1", "municipality").await.status, StatusCode::OK);
    // The trail keeps ten years: the source says so.
    let model = h.demo.gateway.policy.model();
    assert_eq!(model.sources.iter().find(|s| s.id == "rn").unwrap().audit_retention_days, Some(3653));
}

/// Moves the gateway's clock forward to the next moment that is `weekday` (0 Monday) at
/// `minute` in Belgium.
fn advance_to(h: &Harness, weekday: u8, minute: u16) {
    let now = (h.demo.gateway.policy.now_ms() / 1000) as i64;
    let mut t = now - now.rem_euclid(60) + 60;
    while policies::conditions::brussels(t) != (weekday, minute) {
        t += 60;
    }
    h.demo.gateway.policy.advance_clock(Duration::from_secs((t - now) as u64));
}

fn fingerprint(h: &Harness, client: &str) -> String {
    use rustls::pki_types::pem::PemObject;
    let issued = h.demo.pki.client(client).unwrap();
    let der = rustls::pki_types::CertificateDer::from_pem_slice(issued.cert_pem.as_bytes()).unwrap();
    let id = certs::OrgIdentity::from_der(&der).unwrap();
    id.fingerprint.iter().map(|b| format!("{b:02x}")).collect()
}

/// Seed 004 §3: the matrix answers "who – where – when – in which capacity". BOSA opens a
/// matrix grant to the municipality's registration application only (its certificate), from
/// the gateway host's zone, on weekdays 08:00–18:00; seed 004 §5: a DAM sheet through ICT's
/// and the SSIPVP's advice, 7 days, a remark, a withdrawal.
#[tokio::test]
async fn matrix_grants_hold_where_and_when_and_a_dam_sheet_follows_its_procedure() {
    let h = Harness::start().await.unwrap();
    let municipality = fingerprint(&h, "municipality");
    let other_app = "ab".repeat(32);
    let matrix = |reference: &str, cert: &str, zone: &str| {
        json!({
            "reference": reference, "kind": "access-matrix", "source": "rn", "status": "active",
            "title": "LRA counter application: office hours, from the municipal network",
            "grants": [{
                "id": format!("{reference}-grant"), "recipient": { "org": "0207000176" }, "service": "rn.person",
                "purposes": ["LRA_REGISTRATION"], "fields": ["names", "birthDate"],
                "end_user_role": "local-registration-officer",
                "where": { "certificates": [cert], "zones": [zone] },
                "when": [{ "days": ["mon", "tue", "wed", "thu", "fri"], "from": "08:00", "until": "18:00" }],
            }],
        })
    };
    // A zone nobody named, a malformed window: refused, naming the key.
    let mut bad = matrix("BOSA/LRA/ZONED", &municipality, "nowhere");
    let a = h.ctl("bosa", Method::POST, "/instruments", Some(bad.clone())).await;
    assert_eq!(a.code(), Some("POLICY_INVALID"), "{}", a.text());
    assert!(detail(&a).contains("no zone 'nowhere' is declared"), "{}", a.text());
    bad["grants"][0]["where"]["zones"] = json!(["gateway-host"]);
    bad["grants"][0]["when"][0]["until"] = json!("07:00");
    let a = h.ctl("bosa", Method::POST, "/instruments", Some(bad)).await;
    assert_eq!(a.code(), Some("POLICY_INVALID"), "{}", a.text());
    assert!(detail(&a).contains("when[0]: the window ends (07:00) before it starts (08:00)"), "{}", a.text());
    for (reference, cert, zone) in [
        ("BOSA/LRA/ZONED", municipality.as_str(), "gateway-host"),
        ("BOSA/LRA/OTHER-APP", other_app.as_str(), "gateway-host"),
        ("BOSA/LRA/FIN-NET", municipality.as_str(), "fin-internal"),
    ] {
        let a = h.ctl("bosa", Method::POST, "/instruments", Some(matrix(reference, cert, zone))).await;
        assert_eq!(a.status, StatusCode::CREATED, "{}", a.text());
    }
    // Monday 10:00 in Brussels: the application, from the zone, in the window.
    advance_to(&h, 0, 10 * 60);
    let call = |basis: &'static str| rn_person(&h, basis, "LRA_REGISTRATION", "lra-officer-1", "municipality");
    let a = call("BOSA/LRA/ZONED").await;
    assert_eq!(a.status, StatusCode::OK, "{}", a.text());
    assert!(a.json().unwrap().get("address").is_none(), "the matrix's fields");
    for basis in ["BOSA/LRA/OTHER-APP", "BOSA/LRA/FIN-NET"] {
        let a = call(basis).await;
        assert_eq!((a.status, a.code()), (StatusCode::FORBIDDEN, Some("ACCESS_CONDITION_NOT_MET")), "{basis}");
        assert!(detail(&a).contains("\"where\""), "{}", a.text());
    }
    // 19:00, and Saturday: outside the window.
    advance_to(&h, 0, 19 * 60);
    let a = call("BOSA/LRA/ZONED").await;
    assert_eq!(a.code(), Some("ACCESS_CONDITION_NOT_MET"), "{}", a.text());
    assert!(detail(&a).contains("\"when\", Belgian time"), "{}", a.text());
    advance_to(&h, 5, 10 * 60);
    assert_eq!(call("BOSA/LRA/ZONED").await.code(), Some("ACCESS_CONDITION_NOT_MET"));
    advance_to(&h, 1, 9 * 60);
    assert_eq!(call("BOSA/LRA/ZONED").await.status, StatusCode::OK);
    // The refused calls are in the trail with their code.
    let records = gateway::audit::verify::read_records(&h.demo.config.audit.dir).unwrap();
    assert!(records.iter().any(|r| r.record.code.as_deref() == Some("ACCESS_CONDITION_NOT_MET")));
    h.demo.gateway.policy.reset_clock();

    // Seed 004 §5: a DAM sheet. SPF Finances' project team files it for its data analysts.
    let t = today(&h);
    let sheet = json!({
        "id": "dam-2026-07", "instrument": "SPF-FIN/MATRIX/2017",
        "objectives": "Targeted controls on under-declared cadastral income",
        "methodology": "Risk indicators over parcels and transactions, pseudonymised before analysis",
        "end_user_role": "data-analyst",
        "access": [{ "service": "patrimony.property", "fields": ["parcel", "cadastralIncome", "transactions"] }],
        "purposes": ["RISK_ANALYSIS"], "valid_until": days_from(t, 180),
    });
    let mut dated = sheet.clone();
    dated["advice_date"] = json!(days_from(t, -8));
    let a = h.ctl("spf-finances", Method::POST, "/dam-sheets", Some(dated)).await;
    assert_eq!(a.code(), Some("REQUEST_INVALID"), "no caller-chosen date: {}", a.text());
    let mut wrong = sheet.clone();
    wrong["end_user_role"] = json!("tax-inspector");
    let a = h.ctl("spf-finances", Method::POST, "/dam-sheets", Some(wrong)).await;
    assert_eq!(a.code(), Some("REQUEST_INVALID"), "analysts and data managers only: {}", a.text());
    let mut other = sheet.clone();
    other["org"] = json!("0308350231");
    let a = h.ctl("bank-a", Method::POST, "/dam-sheets", Some(other)).await;
    assert_eq!(a.code(), Some("ADMIN_ROLE_MISSING"), "for itself only: {}", a.text());
    let a = h.ctl("spf-finances", Method::POST, "/dam-sheets", Some(sheet)).await;
    assert_eq!(a.status, StatusCode::CREATED, "{}", a.text());
    assert_eq!(a.json().unwrap()["item"]["approval"], "awaiting ICT's advice");
    // Its analyst holds the role.
    let analyst = json!({ "org": "0308350231", "end_user": "analyst-3", "role": "data-analyst",
                          "valid_from": days_from(t, 0), "valid_until": days_from(t, 180) });
    assert_eq!(h.ctl("spf-finances", Method::POST, "/roles", Some(analyst)).await.status, StatusCode::OK);
    let decide = |h: &Harness| {
        let snapshot = h.demo.gateway.policy.current();
        let q = policies::Query {
            caller: policies::ids::Kbo::parse("0308350231").unwrap(),
            service: "patrimony.property",
            legal_basis: "SPF-FIN/MATRIX/2017",
            purpose: "RISK_ANALYSIS",
            end_user: Some("analyst-3"),
            environment: Env::Production,
            now: h.demo.gateway.policy.now_secs(),
            certificate: None,
            peer: None,
        };
        snapshot.decide(&q)
    };
    assert!(!decide(&h).is_permit());

    let advice = json!({ "reference": "ICT-SEC-2026-31", "favourable": true,
                         "documents": [{ "title": "ICT security review", "sha256": "0f".repeat(32) }] });
    // The SSIPVP's advice integrates ICT's: not before it; ICT's comes from ICT only.
    let a = h.ctl("fin-ssipvp", Method::POST, "/dam-sheets/dam-2026-07/advice", Some(advice.clone())).await;
    assert_eq!(a.code(), Some("TRANSITION_NOT_ALLOWED"), "{}", a.text());
    for who in ["spf-finances", "fin-ssipvp"] {
        let a = h.ctl(who, Method::POST, "/dam-sheets/dam-2026-07/ict-advice", Some(advice.clone())).await;
        assert_eq!(a.code(), Some("ADMIN_ROLE_MISSING"), "{who}: {}", a.text());
    }
    let a = h.ctl("fin-ict", Method::POST, "/dam-sheets/dam-2026-07/ict-advice", Some(advice.clone())).await;
    assert_eq!(a.status, StatusCode::OK, "{}", a.text());
    let ssipvp = json!({ "reference": "SSIPVP-2026-0917", "favourable": true });
    for who in ["spf-finances", "fin-ict"] {
        let a = h.ctl(who, Method::POST, "/dam-sheets/dam-2026-07/advice", Some(ssipvp.clone())).await;
        assert_eq!(a.code(), Some("ADMIN_ROLE_MISSING"), "{who}: {}", a.text());
    }
    let a = h.ctl("fin-ssipvp", Method::POST, "/dam-sheets/dam-2026-07/advice", Some(ssipvp.clone())).await;
    assert_eq!(a.status, StatusCode::OK, "{}", a.text());
    let item = a.json().unwrap()["item"].clone();
    assert!(item["approval"].as_str().unwrap().starts_with("awaiting remarks until"), "{item}");
    assert_eq!(item["ict_advice"]["by"], "0310010416");
    assert_eq!(item["ssipvp_advice"]["by"], "0310010317");
    assert_eq!(item["advice_date"], json!(t.to_string()));
    assert_eq!(
        item["steps"].as_array().unwrap().iter().map(|s| s["to"].as_str().unwrap()).collect::<Vec<_>>(),
        ["filed", "ict-advice", "advice"]
    );
    let a = h.ctl("fin-ssipvp", Method::POST, "/dam-sheets/dam-2026-07/advice", Some(ssipvp)).await;
    assert_eq!(a.code(), Some("ALREADY_EXISTS"), "once");
    assert!(!decide(&h).is_permit(), "within the 7 days");
    // Eight days on, authorized tacitly: the analyst may call, for the sheet's purpose.
    h.demo.gateway.policy.advance_clock(Duration::from_secs(8 * DAY));
    assert!(decide(&h).is_permit(), "{:?}", decide(&h));
    // SPF Finances suspends its matrix (ICT cannot): the sheet's access stops with its parent,
    // and comes back when the suspension is lifted.
    let matrix_path = format!("/instruments/{}/transitions", enc("SPF-FIN/MATRIX/2017"));
    let suspend = json!({ "to": "suspended", "reason": "security incident under review" });
    let a = h.ctl("fin-ict", Method::POST, &matrix_path, Some(suspend.clone())).await;
    assert_eq!(a.code(), Some("ADMIN_ROLE_MISSING"), "{}", a.text());
    let a = h.ctl("spf-finances", Method::POST, &matrix_path, Some(suspend)).await;
    assert_eq!(a.status, StatusCode::OK, "{}", a.text());
    assert!(!decide(&h).is_permit(), "the matrix is suspended");
    let resume = json!({ "to": "active", "reason": "incident closed" });
    let a = h.ctl("spf-finances", Method::POST, &matrix_path, Some(resume)).await;
    assert_eq!(a.status, StatusCode::OK, "{}", a.text());
    assert!(decide(&h).is_permit(), "{:?}", decide(&h));
    let remark = json!({ "remark": "too broad" });
    let a = h.ctl("spf-finances", Method::POST, "/dam-sheets/dam-2026-07/remark", Some(remark.clone())).await;
    assert_eq!(a.code(), Some("TRANSITION_NOT_ALLOWED"), "too late for a remark: {}", a.text());
    let a = h.ctl("fin-ict", Method::POST, "/dam-sheets/dam-2026-07/withdraw", Some(json!({ "reason": "x" }))).await;
    assert_eq!(a.code(), Some("ADMIN_ROLE_MISSING"));
    let a = h
        .ctl(
            "spf-finances",
            Method::POST,
            "/dam-sheets/dam-2026-07/withdraw",
            Some(json!({ "reason": "project closed" })),
        )
        .await;
    assert_eq!(a.status, StatusCode::OK, "{}", a.text());
    assert!(!decide(&h).is_permit(), "withdrawn: at once");
    let a = h.ctl("fin-ict", Method::GET, "/dam-sheets", None).await;
    assert_eq!(a.json().unwrap()["items"][0]["approval"], "withdrawn", "{}", a.text());
    assert_eq!(h.ctl("bank-a", Method::GET, "/dam-sheets", None).await.json().unwrap()["count"], 0, "need to know");
    // Nothing of it is public.
    let public = send(&h.public_client(), Method::GET, "/public/instruments", &[], Bytes::new()).await.unwrap();
    assert!(!public.text().contains("dam-2026-07") && !public.text().contains("SPF-FIN/MATRIX"), "{}", public.text());
}

/// DOMAIN.md §1: a data subject — a citizen, an association or an enterprise — asks "who
/// consulted my data?". An enterprise holding a vehicle asks with its own certificate (it need
/// not be registered); an association registered with its vCode likewise.
#[tokio::test]
async fn an_enterprise_and_an_association_ask_who_consulted_their_data() {
    let h = Harness::start().await.unwrap();
    let holder = tests::holder_kbo();
    let mut d = [0u8; 10];
    let holder_digits = holder.digits(&mut d).to_owned();
    let register = adapters::div::sandbox::Register::generate();
    let vehicle = register
        .vehicles()
        .iter()
        .find(|v| matches!(v.holder, adapters::div::sandbox::Holder::Organisation(k) if k == holder))
        .unwrap();
    let headers = [("x-legal-basis", DIV_LEGAL_BASIS), ("x-purpose", DIV_PURPOSE), ("x-request-id", "div-holder-1")];
    let body = Bytes::from(adapters::div::request_by_vin(vehicle.vin.as_str()));
    let a = send(&h.client(DIV_CALLER), Method::POST, "/div/vehicle", &headers, body).await.unwrap();
    assert_eq!(a.status, StatusCode::OK, "{}", a.text());

    let report = |who: &'static str, subject: Option<String>| {
        let h = &h;
        async move {
            let headers: Vec<(&str, &str)> = subject.iter().map(|s| ("x-subject", s.as_str())).collect();
            let a = send(&h.control_client(who), Method::GET, "/audit/report", &headers, Bytes::new()).await.unwrap();
            tests::openapi::check("GET", "/audit/report", &a);
            a
        }
    };
    let a = report(HOLDER, Some(holder_digits.clone())).await;
    assert_eq!(a.status, StatusCode::OK, "{}", a.text());
    let doc = a.json().unwrap();
    let caller = gateway::demo::org_kbo(DIV_CALLER).unwrap().to_string().replace('.', "");
    let accesses = doc["accesses"].as_array().unwrap();
    assert!(
        accesses.iter().any(|x| x["organisation"]["enterprise_number"] == caller.as_str() && x["outcome"] == "granted"),
        "{doc}"
    );
    // Another enterprise's report, a person's, or none named: refused.
    let a = report(HOLDER, Some(ASSOCIATION_KBO.to_owned())).await;
    assert_eq!(a.code(), Some("ADMIN_ROLE_MISSING"), "{}", a.text());
    let a = report(HOLDER, Some(tests::person())).await;
    assert_eq!(a.code(), Some("ADMIN_ROLE_MISSING"), "{}", a.text());
    let a = report(HOLDER, None).await;
    assert_eq!(a.code(), Some("SUBJECT_INVALID"), "{}", a.text());
    // The report request is itself in the trail.
    let records = gateway::audit::verify::read_records(&h.demo.config.audit.dir).unwrap();
    let asked = records.iter().rev().find(|r| r.record.operation == "GET /audit/report").unwrap();
    assert_eq!(asked.record.caller.as_deref(), Some(holder_digits.as_str()));

    // The association: registered by the integrator with its vCode, it asks about that vCode.
    let v = tests::vcode();
    let a = tests::association(&h.client(ASSOC_CALLER), &v, &[]).await.unwrap();
    assert_eq!(a.status, StatusCode::OK, "{}", a.text());
    let a = report(ASSOCIATION, Some(v.clone())).await;
    assert_eq!(a.code(), Some("ADMIN_ROLE_MISSING"), "not registered with this vCode: {}", a.text());
    let org = json!({ "kbo": ASSOCIATION_KBO, "name": "Association (synthetic)", "kind": "company", "vcode": v });
    assert_eq!(h.ctl("admin", Method::POST, "/organisations", Some(org)).await.status, StatusCode::CREATED);
    let a = report(ASSOCIATION, Some(v.clone())).await;
    assert_eq!(a.status, StatusCode::OK, "{}", a.text());
    let doc = a.json().unwrap();
    let agency = gateway::demo::org_kbo(ASSOC_CALLER).unwrap().to_string().replace('.', "");
    assert!(
        doc["accesses"].as_array().unwrap().iter().any(|x| x["organisation"]["enterprise_number"] == agency.as_str()),
        "{doc}"
    );
}
