//! What the public listener publishes about the flows (DOMAIN.md §2; art. 8 of the Flemish
//! decree requires protocols to be published, and the list of adherents to a general
//! instrument is public): active deliberations and protocols, conventions in the `published`
//! state, and active general instruments with their adherents. Built from the policy in force
//! at each call, so a change is visible at once; as JSON and as a plain HTML page.

use policies::Snapshot;
use policies::model::{ConventionState, Env, Instrument, InstrumentKind, Policy, Recipient, Status};
use serde_json::{Value, json};

use crate::error::escape_xml;

/// Whether `ins` is published now: its own state allows it, and what it rests on holds it in
/// force — every parent in force and no replacing deliberation in force — by the same rule as
/// `decide()` (`Snapshot::rests_in_force`, for production at `now`, Unix seconds).
pub fn is_published(snapshot: &Snapshot, ins: &Instrument, now: i64) -> bool {
    let own = match ins.kind {
        InstrumentKind::Convention => ins.state == Some(ConventionState::Published),
        InstrumentKind::Deliberation | InstrumentKind::Protocol | InstrumentKind::General => {
            ins.effective_status() == Status::Active
        }
        InstrumentKind::Statutory | InstrumentKind::AccessMatrix => false,
    };
    own && snapshot.rests_in_force(&ins.reference, Env::Production, now)
}

fn org_name(policy: &Policy, kbo: policies::ids::Kbo) -> String {
    policy.organisations.iter().find(|o| o.kbo == kbo).map_or_else(|| kbo.to_string(), |o| o.name.clone())
}

/// The publication as a JSON document: `policy` and its compiled `snapshot`, at `now` (Unix
/// seconds).
pub fn document(policy: &Policy, snapshot: &Snapshot, now: i64) -> Value {
    let instruments: Vec<Value> = policy
        .instruments
        .iter()
        .filter(|i| is_published(snapshot, i, now))
        .map(|ins| {
            let grants: Vec<Value> = ins
                .grants
                .iter()
                .map(|g| {
                    let recipient = match &g.recipient {
                        Recipient::Org(k) => json!({ "organisation": k, "name": org_name(policy, *k) }),
                        Recipient::Kind(k) => json!({ "kind": k.as_str() }),
                        Recipient::Adherents(_) => json!({ "adherents": true }),
                    };
                    json!({ "service": g.service, "recipient": recipient, "purposes": g.purposes, "fields": g.fields })
                })
                .collect();
            let mut v = json!({
                "reference": ins.reference,
                "kind": ins.kind.as_str(),
                "title": ins.title,
                "authority": ins.authority,
                "number": ins.number,
                "date": ins.date,
                "parent": ins.parent,
                "sources": ins.sources(),
                "valid_from": ins.valid_from,
                "valid_until": ins.valid_until,
                "grants": grants,
            });
            if let Some(p) = &ins.protocol {
                v["protocol"] = json!(
                    p.elements()
                        .iter()
                        .map(|(n, k, val)| json!({ "element": n, "key": k, "text": val }))
                        .collect::<Vec<_>>()
                );
            }
            if ins.kind == InstrumentKind::General {
                v["eligible"] = json!(ins.eligible.iter().map(|k| k.as_str()).collect::<Vec<_>>());
                // Adherents in force only, with the day their adhesion took effect: a request
                // under examination, a refused or a withdrawn one is not public.
                v["adherents"] = json!(
                    ins.adhesions
                        .iter()
                        .filter(|a| a.in_force())
                        .map(|a| json!({
                            "organisation": a.org,
                            "name": org_name(policy, a.org),
                            "date": a.active_since.unwrap_or(a.date),
                        }))
                        .collect::<Vec<_>>()
                );
            }
            v
        })
        .collect();
    json!({ "count": instruments.len(), "instruments": instruments })
}

fn text(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        Value::Null => String::new(),
        Value::Array(a) => a.iter().map(text).collect::<Vec<_>>().join(", "),
        other => other.to_string(),
    }
}

/// The publication as a plain, readable HTML page (every value escaped).
pub fn html(policy: &Policy, snapshot: &Snapshot, now: i64) -> String {
    let doc = document(policy, snapshot, now);
    let mut out = String::with_capacity(4096);
    out.push_str(
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\"><title>Published data flows</title>",
    );
    out.push_str("<style>body{font-family:sans-serif;max-width:60em;margin:2em auto}table{border-collapse:collapse}td,th{border:1px solid #999;padding:.2em .5em;text-align:left;vertical-align:top}</style></head><body>\n");
    out.push_str("<h1>Published data flows</h1>\n<p>Active deliberations and protocols, published conventions, and general instruments with their adherents.</p>\n");
    let empty = Vec::new();
    for ins in doc["instruments"].as_array().unwrap_or(&empty) {
        out.push_str("<section><h2>");
        escape_xml(&mut out, &text(&ins["reference"]));
        out.push_str(" — ");
        escape_xml(&mut out, &text(&ins["title"]));
        out.push_str("</h2>\n<table>");
        for (label, key) in [
            ("Kind", "kind"),
            ("Authority", "authority"),
            ("Number", "number"),
            ("Date", "date"),
            ("Rests on", "parent"),
            ("Sources", "sources"),
            ("Valid from", "valid_from"),
            ("Valid until", "valid_until"),
            ("Open to", "eligible"),
        ] {
            let t = text(&ins[key]);
            if t.is_empty() {
                continue;
            }
            out.push_str("<tr><th>");
            out.push_str(label);
            out.push_str("</th><td>");
            escape_xml(&mut out, &t);
            out.push_str("</td></tr>");
        }
        out.push_str("</table>\n");
        if let Some(grants) = ins["grants"].as_array().filter(|g| !g.is_empty()) {
            out.push_str("<h3>What it opens</h3><table><tr><th>Service</th><th>Recipient</th><th>Purposes</th><th>Fields</th></tr>");
            for g in grants {
                let r = &g["recipient"];
                let who = if r["adherents"] == true {
                    "the adherents".to_owned()
                } else if !r["kind"].is_null() {
                    format!("every {}", text(&r["kind"]))
                } else {
                    format!("{} ({})", text(&r["name"]), text(&r["organisation"]))
                };
                out.push_str("<tr>");
                for cell in [text(&g["service"]), who, text(&g["purposes"]), text(&g["fields"])] {
                    out.push_str("<td>");
                    escape_xml(&mut out, &cell);
                    out.push_str("</td>");
                }
                out.push_str("</tr>");
            }
            out.push_str("</table>\n");
        }
        if let Some(elements) = ins["protocol"].as_array() {
            out.push_str("<h3>The 13 elements (art. 8)</h3><ol>");
            for e in elements {
                out.push_str("<li>");
                escape_xml(&mut out, &text(&e["text"]));
                out.push_str("</li>");
            }
            out.push_str("</ol>\n");
        }
        if let Some(adherents) = ins["adherents"].as_array() {
            out.push_str(
                "<h3>Adherents</h3><table><tr><th>Organisation</th><th>Enterprise number</th><th>Since</th></tr>",
            );
            for a in adherents {
                out.push_str("<tr>");
                for cell in [text(&a["name"]), text(&a["organisation"]), text(&a["date"])] {
                    out.push_str("<td>");
                    escape_xml(&mut out, &cell);
                    out.push_str("</td>");
                }
                out.push_str("</tr>");
            }
            out.push_str("</table>\n");
        }
        out.push_str("</section>\n");
    }
    out.push_str("</body></html>\n");
    out
}
