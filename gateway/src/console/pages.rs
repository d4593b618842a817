//! The console's pages, rendered on the server (maud escapes every value it writes).

use maud::{DOCTYPE, Markup, html};
use serde_json::Value;

use super::{Lang, Viewer, seg};

fn s(v: &Value) -> &str {
    v.as_str().unwrap_or_default()
}

/// A list of strings as `a, b, c`.
fn list(v: &Value) -> String {
    v.as_array().map(|a| a.iter().filter_map(Value::as_str).collect::<Vec<_>>().join(", ")).unwrap_or_default()
}

/// An enterprise number's usual written form (`0403.019.261`).
fn kbo(d: &str) -> String {
    policies::ids::Kbo::parse(d).map_or_else(|_| d.to_owned(), |k| k.to_string())
}

/// The frame of every page: the navigation, who is signed in, the content.
fn frame(lang: Lang, viewer: Option<&Viewer>, title: &str, content: Markup) -> Markup {
    let nav: [(&str, &'static str); 9] = [
        ("/console", "home"),
        ("/console/sources", "sources"),
        ("/console/instruments", "instruments"),
        ("/console/exceptional-accesses", "exceptional"),
        ("/console/audit-requests", "audit_requests"),
        ("/console/organisations", "organisations"),
        ("/console/changes", "changes"),
        ("/console/activity", "activity"),
        ("/console/publication", "publication"),
    ];
    html! {
        (DOCTYPE)
        html lang=(lang.code()) {
            head {
                meta charset="utf-8";
                meta name="viewport" content="width=device-width, initial-scale=1";
                title { (title) " — " (lang.t("console")) }
                link rel="stylesheet" href="/console/static/console.css";
            }
            body {
                header {
                    p.brand { (lang.t("console")) }
                    @if let Some(v) = viewer {
                        p.who {
                            (v.t("signed_in_as")) " "
                            strong { (v.name.as_deref().unwrap_or("?")) }
                            " (" (kbo(&v.kbo)) ")"
                        }
                        nav aria-label="main" {
                            ul {
                                @for (href, key) in nav {
                                    li { a href=(href) { (v.t(key)) } }
                                }
                            }
                        }
                    }
                }
                main id="main" { h1 { (title) } (content) }
            }
        }
    }
}

/// A table's header row, its columns named from the catalogue.
fn head(v: &Viewer, keys: &[&'static str]) -> Markup {
    html! { thead { tr { @for k in keys { th scope="col" { (v.t(k)) } } } } }
}

/// The hidden token every form carries.
fn token(v: &Viewer) -> Markup {
    html! { input type="hidden" name="csrf" value=(v.token); }
}

pub(super) fn refused(lang: Lang, code: &str, detail: &str) -> Markup {
    frame(
        lang,
        None,
        lang.t("forbidden"),
        html! {
            p.problem { code { (code) } " — " (detail) }
        },
    )
}

pub(super) fn forbidden(v: &Viewer, detail: &str) -> Markup {
    frame(
        v.lang,
        Some(v),
        v.t("forbidden"),
        html! {
            p.problem data-code="ADMIN_ROLE_MISSING" { (v.t("forbidden_text")) }
            p { (detail) }
        },
    )
}

pub(super) fn not_found(v: &Viewer) -> Markup {
    frame(v.lang, Some(v), v.t("not_found"), html! { p { a href="/console" { (v.t("home")) } } })
}

/// The page shown when the control plane refused a change or a read: its code and detail.
pub(super) fn refusal(v: &Viewer, code: &str, detail: &str, back: Option<&str>) -> Markup {
    frame(
        v.lang,
        Some(v),
        v.t("failed"),
        html! {
            p.problem data-code=(code) role="alert" { code { (code) } " — " (detail) }
            @if let Some(b) = back { p { a href=(b) { (v.t("back")) } } }
        },
    )
}

pub(super) fn home(v: &Viewer, version: u64) -> Markup {
    let content = html! {
        @if v.name.is_none() { p.problem { (v.t("not_registered")) } }
        dl.facts {
            dt { (v.t("enterprise_number")) } dd { (kbo(&v.kbo)) }
            dt { (v.t("kind")) } dd { (v.kind.as_deref().unwrap_or("—")) }
            dt { (v.t("certificate")) } dd { (v.t("expires")) " — " (v.cert_days) " " (v.t("days_left")) }
            dt { (v.t("policy_version")) } dd { (version) }
        }
    };
    frame(v.lang, Some(v), v.t("home"), content)
}

pub(super) fn sources(v: &Viewer, sources: &[Value], services: &[Value]) -> Markup {
    let content = html! {
        @for src in sources {
            section.card id=(format!("source-{}", s(&src["id"]))) {
                h2 { (s(&src["name"])) " " small { code { (s(&src["id"])) } } }
                dl.facts {
                    dt { (v.t("owner")) } dd { (kbo(s(&src["owner"]))) }
                    dt { (v.t("privacy_office")) } dd { (kbo(src["privacy_office"].as_str().unwrap_or(s(&src["owner"])))) }
                }
                h3 { (v.t("services")) }
                table {
                    (head(v, &["service", "fields", "exposure", "description"]))
                    tbody {
                        @for svc in services.iter().filter(|x| x["source"] == src["id"]) {
                            tr {
                                td { code { (s(&svc["id"])) } }
                                td { (list(&svc["fields"])) }
                                td { @if let Some(p) = svc["exposure"]["path"].as_str() { code { (p) } } @else { "—" } }
                                td {
                                    @if let (Some(base), Some(dialect)) = (&v.public_base, svc["exposure"]["dialect"].as_str()) {
                                        @let (ext, label) = if dialect == "soap" { ("wsdl", "WSDL") } else { ("openapi.json", "OpenAPI") };
                                        a href=(format!("{base}/public/services/{}.{ext}", seg(s(&svc["id"])))) { (label) }
                                    } @else { "—" }
                                }
                            }
                        }
                    }
                }
            }
        }
        section.card #register {
            h2 { (v.t("register_xsd")) }
            form method="post" action="/console/services" {
                (token(v))
                label for="svc-source" { (v.t("source")) }
                select id="svc-source" name="source" {
                    @for src in sources { option value=(s(&src["id"])) { (s(&src["name"])) } }
                }
                @for (name, key, hint) in [
                    ("id", "service_id", "div.history"),
                    ("path", "exposure", "/div/history"),
                    ("upstream_path", "upstream_path", "/div/v1/history"),
                    ("request_element", "request_element", "GetVehicleHistoryRequest"),
                    ("response_element", "response_element", "GetVehicleHistoryResponse"),
                ] {
                    label for=(format!("svc-{name}")) { (v.t(key)) }
                    input id=(format!("svc-{name}")) name=(name) type="text" placeholder=(hint) required;
                }
                label for="svc-subject" { (v.t("subject_kind")) }
                select id="svc-subject" name="subject" {
                    @for k in ["none", "niss", "kbo", "association"] { option value=(k) { (k) } }
                }
                label for="svc-xsd" { (v.t("xsd")) }
                textarea id="svc-xsd" name="xsd" rows="8" required {}
                label for="svc-catalogue" { (v.t("catalogue")) }
                p.hint id="catalogue-hint" { (v.t("catalogue_hint")) }
                textarea id="svc-catalogue" name="catalogue" rows="6" aria-describedby="catalogue-hint" required {}
                button type="submit" { (v.t("register")) }
            }
        }
    };
    frame(v.lang, Some(v), v.t("sources"), content)
}

pub(super) fn changes(v: &Viewer, changes: &[Value]) -> Markup {
    let content = html! {
        @if changes.is_empty() { p { (v.t("none")) } }
        table #changes {
            (head(v, &["version", "time", "actor", "operation", "summary", "reason"]))
            tbody {
                @for c in changes.iter().rev() {
                    tr {
                        td { (c["version"]) }
                        td { (s(&c["time"])) }
                        td { (kbo(s(&c["actor"]))) }
                        td { code { (s(&c["operation"])) } " " (s(&c["target"])) }
                        td { (s(&c["summary"])) }
                        td { (c["reason"].as_str().unwrap_or("")) }
                    }
                }
            }
        }
    };
    frame(v.lang, Some(v), v.t("changes"), content)
}

/// Whether an instrument in `state` lets its recipients call in production.
fn in_force(state: &str) -> bool {
    matches!(state, "active" | "published")
}

pub(super) fn instruments(v: &Viewer, items: &[Value]) -> Markup {
    let mut states: Vec<&str> = items.iter().map(|i| s(&i["state_or_status"])).collect();
    states.sort_unstable();
    states.dedup();
    let content = html! {
        @if items.is_empty() { p { (v.t("none")) } }
        @for state in &states {
            section.card {
                h2 { (v.t("state")) ": " (state) }
                table {
                    (head(v, &["reference", "kind", "title", "in_force"]))
                    tbody {
                        @for i in items.iter().filter(|i| s(&i["state_or_status"]) == *state) {
                            tr {
                                td { a href=(format!("/console/instruments/{}", seg(s(&i["reference"])))) { (s(&i["reference"])) } }
                                td { (s(&i["kind"])) }
                                td { (s(&i["title"])) }
                                td { (s(&i["effective_status"])) }
                            }
                        }
                    }
                }
            }
        }
    };
    frame(v.lang, Some(v), v.t("instruments"), content)
}

/// Who a grant is for, named from the register.
fn recipient(r: &Value, orgs: &[Value]) -> String {
    if let Some(k) = r["org"].as_str() {
        let name = orgs.iter().find(|o| o["kbo"].as_str() == Some(k)).map(|o| s(&o["name"]).to_owned());
        return match name {
            Some(n) => format!("{n} ({})", kbo(k)),
            None => kbo(k),
        };
    }
    if let Some(k) = r["kind"].as_str() {
        return format!("every organisation of kind {k}");
    }
    "the adherents".to_owned()
}

pub(super) fn instrument(v: &Viewer, ins: &Value, orgs: &[Value]) -> Markup {
    let reference = s(&ins["reference"]);
    let state = s(&ins["state_or_status"]);
    let next: Vec<&str> = ins["next_states"].as_array().map(|a| a.iter().map(s).collect()).unwrap_or_default();
    let adhesions: Vec<&Value> = ins["adhesions"].as_array().map(|a| a.iter().collect()).unwrap_or_default();
    let grants: Vec<&Value> = ins["grants"].as_array().map(|a| a.iter().collect()).unwrap_or_default();
    // Who the grants reach: an instrument for its adherents reaches those whose adhesion is active.
    let mut who: Vec<String> = grants
        .iter()
        .flat_map(|g| match g["recipient"].get("adherents") {
            Some(_) => adhesions
                .iter()
                .filter(|a| a["state"] == "active")
                .map(|a| recipient(&serde_json::json!({ "org": a["org"] }), orgs))
                .collect(),
            None => vec![recipient(&g["recipient"], orgs)],
        })
        .collect();
    who.sort();
    who.dedup();
    let reached = if who.is_empty() { v.t("none").to_owned() } else { who.join("; ") };
    let content = html! {
        dl.facts {
            dt { (v.t("reference")) } dd #reference { (reference) }
            dt { (v.t("kind")) } dd { (s(&ins["kind"])) }
            dt { (v.t("title")) } dd { (s(&ins["title"])) }
            dt { (v.t("state")) } dd #state { (state) }
            dt { (v.t("in_force")) } dd #effective { (s(&ins["effective_status"])) }
            @if let Some(p) = ins["parent"].as_str() {
                dt { (v.t("parent")) } dd { a href=(format!("/console/instruments/{}", seg(p))) { (p) } }
            }
        }
        h2 { (v.t("access_matrix")) }
        table #matrix {
            (head(v, &["recipient", "what", "purpose", "until"]))
            tbody {
                @for g in &grants {
                    tr {
                        td { (recipient(&g["recipient"], orgs)) }
                        td { code { (s(&g["service"])) } " — " (list(&g["fields"])) }
                        td { (list(&g["purposes"])) }
                        td { (g["valid_until"].as_str().or(ins["valid_until"].as_str()).unwrap_or("—")) }
                    }
                }
            }
        }
        h2 { (v.t("actions")) }
        @if next.is_empty() { p { (v.t("no_actions")) } }
        @for to in &next {
            form.step method="post" action=(format!("/console/instruments/{}/transitions", seg(reference))) {
                (token(v))
                input type="hidden" name="to" value=(to);
                fieldset {
                    legend { (v.t("move_to")) " " strong { (to) } }
                    @if in_force(to) && !in_force(state) {
                        p.effect { (v.t("gain")) ": " (reached) }
                    } @else if in_force(state) && !in_force(to) {
                        p.effect { (v.t("lose")) ": " (reached) }
                    } @else {
                        p.effect { (v.t("no_change")) }
                    }
                    label for=(format!("reason-{to}")) { (v.t("reason")) }
                    textarea id=(format!("reason-{to}")) name="reason" rows="2" {}
                    details {
                        summary { (v.t("evidence")) }
                        @for (name, key) in [
                            ("document_title", "document_title"), ("document_reference", "document_reference"),
                            ("text_version", "text_version"), ("layout_version", "layout_version"),
                            ("signatory_name", "signatory_name"), ("signatory_capacity", "signatory_capacity"),
                            ("contact_name", "contact_name"), ("contact_email", "contact_email"), ("contact_phone", "contact_phone"),
                        ] {
                            label for=(format!("{name}-{to}")) { (v.t(key)) }
                            input id=(format!("{name}-{to}")) name=(name) type="text";
                        }
                    }
                    button type="submit" name="go" value=(to) { (v.t("move_to")) " " (to) }
                }
            }
        }
        @if !adhesions.is_empty() {
            h2 { (v.t("adhesions")) }
            @for a in &adhesions {
                @let org = s(&a["org"]);
                section.card.adhesion id=(format!("adhesion-{org}")) {
                    h3 { (recipient(&serde_json::json!({ "org": org }), orgs)) " — " span.state { (s(&a["state"])) } }
                    dl.facts {
                        dt { (v.t("requested_by")) } dd { (s(&a["requested_by"])) }
                        dt { (v.t("filed_on")) } dd { (s(&a["date"])) }
                    }
                    @for to in ins["adhesion_next_steps"][org].as_array().map(Vec::as_slice).unwrap_or_default().iter().map(s) {
                        form.adhesion-step method="post"
                            action=(format!("/console/instruments/{}/adhesions/{org}/transitions", seg(reference))) {
                            (token(v))
                            input type="hidden" name="to" value=(to);
                            fieldset {
                                legend { (v.t("move_to")) " " strong { (to) } }
                                label for=(format!("areason-{org}-{to}")) { (v.t("reason")) }
                                input id=(format!("areason-{org}-{to}")) name="reason" type="text";
                                label for=(format!("adoc-{org}-{to}")) { (v.t("document_title")) }
                                input id=(format!("adoc-{org}-{to}")) name="document_title" type="text";
                                label for=(format!("adocref-{org}-{to}")) { (v.t("document_reference")) }
                                input id=(format!("adocref-{org}-{to}")) name="document_reference" type="text";
                                button type="submit" { (v.t("move_to")) " " (to) }
                            }
                        }
                    }
                }
            }
        }
    };
    frame(v.lang, Some(v), reference, content)
}

/// Days from `today` until `day` (a date the API gives), when it is still to come.
fn days_until(day: &Value, today: i64) -> Option<i64> {
    let d = policies::model::Date::parse(day.as_str()?).ok()?;
    Some(d.days() - today).filter(|n| *n > 0)
}

pub(super) fn exceptional(v: &Viewer, items: &[Value], now_s: i64) -> Markup {
    let today = now_s.div_euclid(86_400);
    let content = html! {
        @if items.is_empty() { p { (v.t("none")) } }
        @for x in items {
            section.card id=(format!("access-{}", s(&x["id"]))) {
                h2 { code { (s(&x["id"])) } }
                dl.facts {
                    dt { (v.t("requester")) } dd { (kbo(s(&x["org"]))) }
                    dt { (v.t("end_user")) } dd { (s(&x["end_user"])) }
                    dt { (v.t("what")) } dd { code { (s(&x["service"])) } " — " (list(&x["fields"])) }
                    dt { (v.t("purpose")) } dd { (list(&x["purposes"])) }
                    dt { (v.t("until")) } dd { (s(&x["valid_until"])) }
                    dt { (v.t("approval")) } dd.approval { (s(&x["approval"])) }
                    @if let Some(n) = days_until(&x["approved_from"], today) {
                        dt { (v.t("countdown")) } dd.countdown { (n) " " (v.t("days_to_approval")) }
                    }
                }
                @if x["advice_date"].is_null() && !x["withdrawn"].as_bool().unwrap_or(false) {
                    form method="post" action=(format!("/console/exceptional-accesses/{}/advice", seg(s(&x["id"])))) {
                        (token(v))
                        fieldset {
                            legend { (v.t("give_advice")) }
                            label for=(format!("ref-{}", s(&x["id"]))) { (v.t("advice_reference")) }
                            input id=(format!("ref-{}", s(&x["id"]))) name="reference" type="text" required;
                            button type="submit" name="favourable" value="true" { (v.t("favourable")) }
                            button type="submit" name="favourable" value="false" { (v.t("unfavourable")) }
                        }
                    }
                }
            }
        }
    };
    frame(v.lang, Some(v), v.t("exceptional"), content)
}

pub(super) fn audit_requests(v: &Viewer, items: &[Value]) -> Markup {
    let content = html! {
        @if items.is_empty() { p { (v.t("none")) } }
        @for q in items {
            section.card id=(format!("request-{}", s(&q["id"]))) {
                h2 { code { (s(&q["id"])) } " — " span.state { (s(&q["state"])) } }
                dl.facts {
                    dt { (v.t("requester")) } dd { (kbo(s(&q["requester"]))) " (" (s(&q["role"])) ")" }
                    dt { (v.t("owner")) } dd { (kbo(s(&q["owner"]))) }
                    dt { (v.t("about")) } dd {
                        @if let Some(c) = q["caller"].as_str() { "calls by " (kbo(c)) }
                        @else if !q["subject"].is_null() { "one data subject" }
                    }
                    dt { (v.t("period")) } dd { (s(&q["from"])) " – " (s(&q["to"])) }
                    dt { (v.t("justification")) } dd {
                        (s(&q["justification"]["case_reference"])) "; " (s(&q["justification"]["legal_ground"]))
                        "; " (s(&q["justification"]["requested_by"]))
                    }
                    @if !q["advice"].is_null() {
                        dt { (v.t("advice")) } dd.advice {
                            @if q["advice"]["favourable"].as_bool().unwrap_or(false) { (v.t("favourable")) } @else { (v.t("unfavourable")) }
                            " — " (s(&q["advice"]["reason"]))
                        }
                    }
                }
                @if s(&q["state"]) == "approved" {
                    p { a.download href=(format!("/console/audit-requests/{}/results", seg(s(&q["id"])))) { (v.t("download_results")) } }
                }
                @if s(&q["state"]) == "submitted" && s(&q["requester"]) != v.kbo {
                    form method="post" action=(format!("/console/audit-requests/{}/advice", seg(s(&q["id"])))) {
                        (token(v))
                        fieldset {
                            legend { (v.t("give_advice")) }
                            label for=(format!("reason-{}", s(&q["id"]))) { (v.t("reason")) }
                            textarea id=(format!("reason-{}", s(&q["id"]))) name="reason" rows="2" required {}
                            button type="submit" name="favourable" value="true" { (v.t("favourable")) }
                            button type="submit" name="favourable" value="false" { (v.t("unfavourable")) }
                        }
                    }
                }
            }
        }
    };
    frame(v.lang, Some(v), v.t("audit_requests"), content)
}

pub(super) fn organisations(v: &Viewer, items: &[Value], now_s: i64) -> Markup {
    let content = html! {
        table #organisations {
            (head(v, &["name", "enterprise_number", "kind", "certificate"]))
            tbody {
                @for o in items {
                    tr {
                        td { (s(&o["name"])) }
                        td { (kbo(s(&o["kbo"]))) }
                        td { (s(&o["kind"])) }
                        td {
                            @for c in o["certificates"].as_array().map(Vec::as_slice).unwrap_or_default() {
                                @let days = c["not_after"].as_i64().map(|t| (t - now_s).div_euclid(86_400));
                                span.cert { (s(&c["common_name"])) ": " @if let Some(d) = days { (d) " " (v.t("days_left")) } }
                                br;
                            }
                        }
                    }
                }
            }
        }
    };
    frame(v.lang, Some(v), v.t("organisations"), content)
}

/// The data plane's last hour: calls minute by minute (refused ones stacked in another
/// colour), refusals by code, and each service's 99th percentile. The chart is SVG drawn here;
/// the same figures stand in the tables below it for those who do not see it.
pub(super) fn activity(v: &Viewer, a: &Value, metrics_url: Option<&str>) -> Markup {
    const W: f64 = 720.0;
    const H: f64 = 160.0;
    let minutes: Vec<&Value> = a["minutes"].as_array().map(|m| m.iter().collect()).unwrap_or_default();
    let n = |x: &Value| x.as_u64().unwrap_or(0);
    let peak = minutes.iter().map(|m| n(&m["calls"])).max().unwrap_or(0).max(1) as f64;
    let slot = W / minutes.len().max(1) as f64;
    let services: Vec<&Value> = a["services"].as_array().map(|s| s.iter().collect()).unwrap_or_default();
    let slowest = services.iter().filter_map(|s| s["p99_ms"].as_f64()).fold(1.0_f64, f64::max);
    let content = html! {
        p { (s(&a["from"])) " – " (s(&a["to"])) }
        dl.facts {
            dt { (v.t("calls")) } dd #activity-calls { (n(&a["calls"])) }
            dt { (v.t("refused")) } dd #activity-refused { (n(&a["refused"])) }
        }
        figure {
            svg.chart width=(W) height=(H + 20.0) viewBox=(format!("0 0 {W} {}", H + 20.0)) role="img" aria-labelledby="calls-title" {
                title id="calls-title" { (v.t("calls_per_minute")) }
                line x1="0" y1=(H) x2=(W) y2=(H) stroke="#4a5560" {}
                @for (i, m) in minutes.iter().enumerate() {
                    @let (calls, refused) = (n(&m["calls"]) as f64, n(&m["refused"]) as f64);
                    @let x = i as f64 * slot + 1.0;
                    @let w = (slot - 2.0).max(1.0);
                    rect.granted x=(x) y=(H - calls / peak * H) width=(w) height=((calls - refused) / peak * H) fill="#0b5cad" {}
                    rect.refused x=(x) y=(H - refused / peak * H) width=(w) height=(refused / peak * H) fill="#a4260f" {}
                }
                text x="4" y="12" font-size="12" fill="#1b1f24" { (peak as u64) " / min" }
                text x="4" y=(H + 16.0) font-size="12" fill="#1b1f24" { (v.t("calls_per_minute")) }
            }
            figcaption { span.key-granted { "■ " } (v.t("granted")) " " span.key-refused { "■ " } (v.t("refused")) }
        }
        h2 { (v.t("refusals_by_code")) }
        @if a["refusals"].as_array().is_none_or(Vec::is_empty) { p { (v.t("none")) } }
        table #refusals {
            tbody {
                @for r in a["refusals"].as_array().map(Vec::as_slice).unwrap_or_default() {
                    tr { th scope="row" { code { (s(&r["code"])) } } td { (n(&r["count"])) } }
                }
            }
        }
        h2 { (v.t("readiness")) }
        @let ready = &a["readiness"];
        dl.facts #readiness {
            dt { (v.t("ready")) } dd #ready { (yes_no(v, &ready["ready"])) }
            dt { (v.t("store")) } dd { (yes_no(v, &ready["store"])) }
            dt { (v.t("audit_writable")) } dd { (yes_no(v, &ready["audit_writable"])) }
            dt { (v.t("policy_version")) } dd { (ready["policy"]["version"]) " (" (ready["policy"]["grants"]) " grants)" }
        }
        table #source-readiness {
            (head(v, &["source", "reachable"]))
            tbody {
                @for key in ["sources", "registered_sources"] {
                    @for (name, up) in ready[key].as_object().into_iter().flatten() {
                        tr { td { code { (name) } } td { (yes_no(v, up)) } }
                    }
                }
            }
        }
        @if let Some(url) = metrics_url { p { a href=(url) { (v.t("metrics_link")) } } }
        h2 { (v.t("p99_by_service")) }
        svg.chart width=(W) height=(services.len() as f64 * 24.0 + 4.0) role="img" aria-labelledby="p99-title" {
            title id="p99-title" { (v.t("p99_by_service")) }
            @for (i, svc) in services.iter().enumerate() {
                @let p99 = svc["p99_ms"].as_f64();
                @let y = i as f64 * 24.0 + 2.0;
                text x="0" y=(y + 15.0) font-size="13" fill="#1b1f24" { (s(&svc["service"])) }
                rect x="200" y=(y) width=(p99.map_or(W - 280.0, |p| (p / slowest * (W - 280.0)).max(2.0))) height="18" fill="#0b5cad" {}
                text x=(W - 70.0) y=(y + 15.0) font-size="13" fill="#1b1f24" {
                    @if let Some(p) = p99 { "≤ " (p) " ms" } @else { "> 5 s" }
                }
            }
        }
        table #services {
            thead { tr { th scope="col" { (v.t("service")) } th scope="col" { (v.t("calls")) } th scope="col" { "p99" } } }
            tbody {
                @for svc in &services {
                    tr {
                        td { code { (s(&svc["service"])) } }
                        td { (n(&svc["calls"])) }
                        td { @if let Some(p) = svc["p99_ms"].as_f64() { "≤ " (p) " ms" } @else { "> 5 s" } }
                    }
                }
            }
        }
    };
    frame(v.lang, Some(v), v.t("activity"), content)
}

fn yes_no(v: &Viewer, b: &Value) -> &'static str {
    if b.as_bool().unwrap_or(false) { v.t("yes") } else { v.t("no") }
}

/// What the public listener publishes (`/public/instruments`), as it stands now.
pub(super) fn publication(v: &Viewer, doc: &Value) -> Markup {
    let items: Vec<&Value> = doc["instruments"].as_array().map(|a| a.iter().collect()).unwrap_or_default();
    let content = html! {
        p { (v.t("publication_text")) }
        table #publication {
            (head(v, &["reference", "title", "recipient", "what"]))
            tbody {
                @for i in &items {
                    tr {
                        td { (s(&i["reference"])) }
                        td { (s(&i["title"])) }
                        td {
                            @for g in i["grants"].as_array().map(Vec::as_slice).unwrap_or_default() {
                                @let r = &g["recipient"];
                                (r["name"].as_str().or(r["kind"].as_str()).unwrap_or("the adherents")) br;
                            }
                        }
                        td {
                            @for g in i["grants"].as_array().map(Vec::as_slice).unwrap_or_default() {
                                code { (s(&g["service"])) } " — " (list(&g["fields"])) br;
                            }
                        }
                    }
                }
            }
        }
    };
    frame(v.lang, Some(v), v.t("publication"), content)
}
