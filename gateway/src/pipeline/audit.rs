//! Step 11 — audit: what each step learnt about the call, gathered into the record that
//! `Pipeline::handle` appends to the trail before the response leaves (see `crate::audit`).
//!
//! Values a caller sent are recorded as sent (bounded in length) even when a later step
//! refuses them, so that an attempt is reconstructible; identifiers are recorded in their
//! canonical digits.

use std::time::Duration;

use http::{HeaderMap, Request};
use hyper::body::Incoming;
use policies::model::Env;
use policies::{Permit, Snapshot};

use super::envelope::{self, Envelope, Subject};
use super::identity::Caller;
use crate::audit::format::hex;
use crate::audit::{Outcome, Record, RecordKind, SubjectRef};
use crate::error::{Code, Refusal};

/// Longest value of a caller-supplied string kept in a record.
const MAX_VALUE: usize = 256;

fn bounded(s: &str) -> String {
    if s.len() <= MAX_VALUE {
        return s.to_owned();
    }
    let mut end = MAX_VALUE;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    s[..end].to_owned()
}

/// `METHOD /path`, bounded like any value a caller sent.
fn operation(method: &str, path: &str) -> String {
    let mut s = String::with_capacity((method.len() + 1 + path.len()).min(MAX_VALUE));
    s.push_str(method);
    s.push(' ');
    s.push_str(path);
    if s.len() > MAX_VALUE { bounded(&s) } else { s }
}

/// The audit record in the making.
#[derive(Debug)]
pub struct Trace {
    time_ms: u64,
    operation: String,
    caller: Option<String>,
    cert_fingerprint: Option<String>,
    environment: Option<&'static str>,
    service: Option<&'static str>,
    legal_basis: Option<String>,
    purpose: Option<String>,
    end_user: Option<String>,
    trace_id: Option<String>,
    subjects: Vec<SubjectRef>,
    grant: Option<String>,
    fields: Vec<String>,
    upstream_status: Option<u16>,
    consent_id: Option<String>,
}

impl Trace {
    pub fn start(req: &Request<Incoming>, caller: &Caller) -> Self {
        let time_ms =
            std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64);
        let (kbo, fp) = match &caller.identity {
            Ok(id) => {
                let mut d = [0u8; 10];
                (Some(id.kbo.digits(&mut d).to_owned()), Some(id.fingerprint_hex()))
            }
            Err(_) => (None, None),
        };
        Trace {
            time_ms,
            operation: operation(req.method().as_str(), req.uri().path()),
            caller: kbo,
            cert_fingerprint: fp,
            environment: None,
            service: None,
            legal_basis: None,
            purpose: None,
            end_user: None,
            trace_id: None,
            subjects: Vec::new(),
            grant: None,
            fields: Vec::new(),
            upstream_status: None,
            consent_id: None,
        }
    }

    /// When the call was received (Unix milliseconds): the time consent and validity are
    /// judged at.
    pub fn time_ms(&self) -> u64 {
        self.time_ms
    }

    pub fn consent(&mut self, id: Option<crate::consent::ConsentId>) {
        self.consent_id = id.map(crate::consent::ConsentId::to_text);
    }

    pub fn environment(&mut self, env: Env) {
        self.environment = Some(match env {
            Env::Test => "test",
            Env::Production => "production",
        });
    }

    pub fn service(&mut self, id: &'static str) {
        self.service = Some(id);
    }

    /// What the caller sent, before it is checked.
    pub fn envelope_raw(&mut self, h: &HeaderMap) {
        let get = |n: &http::HeaderName| h.get(n).and_then(|v| v.to_str().ok()).map(bounded);
        self.legal_basis = get(&envelope::LEGAL_BASIS);
        self.purpose = get(&envelope::PURPOSE);
        self.end_user = get(&envelope::END_USER);
    }

    pub fn envelope(&mut self, env: &Envelope<'_>) {
        if let Some(tp) = env.traceparent {
            self.trace_id = Some(hex(&tp.trace_id));
        }
        match env.subject {
            Some(Subject::Person(n)) => {
                let mut b = [0u8; 11];
                self.subjects.push(SubjectRef::Person(n.digits(&mut b).to_owned()));
            }
            Some(Subject::Organisation(k)) => {
                let mut b = [0u8; 10];
                self.subjects.push(SubjectRef::Organisation(k.digits(&mut b).to_owned()));
            }
            Some(Subject::Association(v)) => {
                self.subjects.push(SubjectRef::Association(v.text(&mut [0; 8]).to_owned()))
            }
            None => {}
        }
    }

    pub fn decision(&mut self, snapshot: &Snapshot, decided: &Result<Permit, Refusal>) {
        if let Ok(p) = decided {
            self.grant = snapshot.grant_name(p.grant).map(str::to_owned);
            self.fields = snapshot.field_names(p.service, p.fields).map(str::to_owned).collect();
        }
    }

    pub fn upstream(&mut self, status: u16) {
        self.upstream_status = Some(status);
    }

    /// The service id for metric labels (`none` when the path named no service).
    pub fn service_label(&self) -> &'static str {
        self.service.unwrap_or("none")
    }

    /// The fields the grant lets the answer carry.
    pub fn granted_fields(&self) -> &[String] {
        &self.fields
    }

    /// Subjects found in the answer that leaves (beyond the one the caller named).
    pub fn answer_subjects(&mut self, found: Vec<SubjectRef>) {
        for s in found {
            if !self.subjects.contains(&s) {
                self.subjects.push(s);
            }
        }
    }

    /// The finished record for a call answered with `status` (and `code` when refused).
    pub fn finish(self, request_id: &str, status: u16, code: Option<Code>, elapsed: Duration) -> Record {
        Record {
            kind: RecordKind::DataCall,
            time_ms: self.time_ms,
            request_id: bounded(request_id),
            trace_id: self.trace_id,
            caller: self.caller,
            cert_fingerprint: self.cert_fingerprint,
            end_user: self.end_user,
            environment: self.environment.map(str::to_owned),
            service: self.service.map(str::to_owned),
            operation: self.operation,
            legal_basis: self.legal_basis,
            grant: self.grant,
            purpose: self.purpose,
            subjects: self.subjects,
            // Only a granted call returns fields.
            fields: if code.is_none() { self.fields } else { Vec::new() },
            consent_id: self.consent_id,
            outcome: if code.is_none() { Outcome::Granted } else { Outcome::Refused },
            status,
            code: code.map(|c| c.as_str().to_owned()),
            upstream_status: self.upstream_status,
            latency_us: elapsed.as_micros() as u64,
            justification: None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn operation_is_method_and_path_bounded_at_a_char_boundary() {
        assert_eq!(operation("GET", "/associations/association"), "GET /associations/association");
        let long = format!("/{}", "é".repeat(200));
        let op = operation("POST", &long);
        assert!(op.len() <= MAX_VALUE && op.len() >= MAX_VALUE - 1, "{}", op.len());
        assert!(op.starts_with("POST /é"));
    }
}
