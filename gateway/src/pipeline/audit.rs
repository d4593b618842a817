//! Step 11 — audit: what each step learnt about the call, gathered into the record that
//! `Pipeline::handle` appends to the trail before the response leaves (see `crate::audit`).
//!
//! Values a caller sent are recorded as sent (bounded in length) even when a later step
//! refuses them, so that an attempt is reconstructible; identifiers are recorded in their
//! canonical digits.
//!
//! The trace keeps what the call's own state does not (the permit, the consent, the subjects
//! found in the answer) and borrows the rest when the call ends: the request's header values,
//! the connection's texts, the names of the policy that decided. The record is written from
//! those straight into the buffer that goes to the writer ([`crate::audit::record::View`]),
//! with no owned copy of it in between.

use std::sync::Arc;
use std::time::Duration;

use http::request::Parts;
use policies::model::Env;
use policies::{Permit, Snapshot};

use super::envelope::{self, Envelope, Subject};
use super::identity::Caller;
use crate::audit::index::Outgoing;
use crate::audit::record::{SubjectKind, View};
use crate::audit::{Outcome, RecordKind, SubjectRef};
use crate::consent::ConsentId;
use crate::error::Code;

/// Longest value of a caller-supplied string kept in a record.
const MAX_VALUE: usize = 256;

/// `s`, cut to [`MAX_VALUE`] bytes at a character boundary.
fn bounded(s: &str) -> &str {
    if s.len() <= MAX_VALUE {
        return s;
    }
    let mut end = MAX_VALUE;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    &s[..end]
}

/// `METHOD /path` in `buf`, bounded like any value a caller sent.
fn operation<'b>(method: &str, path: &str, buf: &'b mut [u8; MAX_VALUE]) -> &'b str {
    let method = bounded(method);
    let path = bounded(path);
    let mut n = 0;
    for part in [method, " ", path] {
        let take = part.len().min(MAX_VALUE - n);
        buf[n..n + take].copy_from_slice(&part.as_bytes()[..take]);
        n += take;
    }
    // Cut at a character boundary of what was copied (only the path can be cut short).
    let mut end = n;
    loop {
        match std::str::from_utf8(&buf[..end]) {
            Ok(s) => return s,
            Err(e) => end = e.valid_up_to(),
        }
    }
}

/// The audit record in the making.
#[derive(Debug)]
pub struct Trace {
    time_ms: u64,
    environment: Option<&'static str>,
    service: Option<&'static str>,
    /// The envelope's headers were reached: the record carries what they said.
    envelope: bool,
    trace_id: Option<[u8; 16]>,
    /// The subject the call named.
    named: Option<Subject>,
    /// Subjects found in the answer beyond the named one, each once.
    found: Vec<SubjectRef>,
    /// The policy that decided and what it permitted.
    permit: Option<(Arc<Snapshot>, Permit)>,
    upstream_status: Option<u16>,
    consent_id: Option<ConsentId>,
}

impl Trace {
    pub fn start() -> Self {
        let time_ms =
            std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64);
        Trace {
            time_ms,
            environment: None,
            service: None,
            envelope: false,
            trace_id: None,
            named: None,
            found: Vec::new(),
            permit: None,
            upstream_status: None,
            consent_id: None,
        }
    }

    /// When the call was received (Unix milliseconds): the time consent and validity are
    /// judged at.
    pub fn time_ms(&self) -> u64 {
        self.time_ms
    }

    pub fn consent(&mut self, id: Option<ConsentId>) {
        self.consent_id = id;
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

    /// The envelope's headers are reached: what the caller sent in them is recorded, as sent,
    /// whether or not it is valid.
    pub fn envelope_raw(&mut self) {
        self.envelope = true;
    }

    pub fn envelope(&mut self, env: &Envelope<'_>) {
        self.trace_id = env.traceparent.map(|tp| tp.trace_id);
        self.named = env.subject;
    }

    pub fn decision(&mut self, snapshot: &Arc<Snapshot>, decided: &Result<Permit, crate::error::Refusal>) {
        if let Ok(p) = decided {
            self.permit = Some((snapshot.clone(), *p));
        }
    }

    pub fn upstream(&mut self, status: u16) {
        self.upstream_status = Some(status);
    }

    /// The service id for metric labels (`none` when the path named no service).
    pub fn service_label(&self) -> &'static str {
        self.service.unwrap_or("none")
    }

    /// The names of the fields the grant lets the answer carry.
    pub fn granted_fields(&self) -> impl Iterator<Item = &str> {
        self.permit.iter().flat_map(|(snapshot, p)| snapshot.field_names(p.service, p.fields))
    }

    /// Does the grant let the answer carry field `f`?
    pub fn grants(&self, f: &str) -> bool {
        self.granted_fields().any(|g| g == f)
    }

    /// Subjects found in the answer that leaves (beyond the one the caller named).
    pub fn answer_subjects(&mut self, found: Vec<SubjectRef>) {
        let mut digits = Digits::default();
        let named = self.named.map(|s| digits.of(s));
        for s in found {
            if named != Some((s.kind(), s.id())) && !self.found.contains(&s) {
                self.found.push(s);
            }
        }
    }

    /// The finished record of a call answered with `status` (and `code` when refused),
    /// written out for the trail.
    pub fn finish(
        &self,
        caller: &Caller,
        head: &Parts,
        request_id: &str,
        status: u16,
        code: Option<Code>,
        elapsed: Duration,
    ) -> Outgoing {
        let raw = |name: &http::HeaderName| {
            self.envelope.then(|| head.headers.get(name).and_then(|v| v.to_str().ok()).map(bounded)).flatten()
        };
        let mut op = [0u8; MAX_VALUE];
        let (mut digits, mut trace, mut consent) = (Digits::default(), [0u8; 32], [0u8; 34]);
        let named = self.named.map(|s| digits.of(s));
        let granted = code.is_none();
        // Only a granted call returns fields.
        let fields = self.granted_fields().filter(|_| granted);
        View {
            kind: RecordKind::DataCall,
            time_ms: self.time_ms,
            request_id: bounded(request_id),
            trace_id: self.trace_id.map(|t| hex(&t, &mut trace)),
            caller: caller.kbo_text(),
            cert_fingerprint: caller.fingerprint_text(),
            end_user: raw(&envelope::END_USER),
            environment: self.environment,
            service: self.service,
            operation: operation(head.method.as_str(), head.uri.path(), &mut op),
            legal_basis: raw(&envelope::LEGAL_BASIS),
            grant: self.permit.as_ref().and_then(|(s, p)| s.grant_name(p.grant)),
            purpose: raw(&envelope::PURPOSE),
            subjects: named.into_iter().chain(self.found.iter().map(|s| (s.kind(), s.id()))),
            fields,
            consent_id: self.consent_id.map(|c| c.text(&mut consent)),
            outcome: if granted { Outcome::Granted } else { Outcome::Refused },
            status,
            code: code.map(Code::as_str),
            upstream_status: self.upstream_status,
            latency_us: elapsed.as_micros() as u64,
            justification: None,
        }
        .outgoing()
    }
}

/// Room for a named subject's canonical text.
#[derive(Default)]
struct Digits {
    niss: [u8; 11],
    kbo: [u8; 10],
    vcode: [u8; 8],
}

impl Digits {
    /// The subject's kind and canonical text.
    fn of(&mut self, s: Subject) -> (SubjectKind, &str) {
        match s {
            Subject::Person(n) => (SubjectKind::Person, n.digits(&mut self.niss)),
            Subject::Organisation(k) => (SubjectKind::Organisation, k.digits(&mut self.kbo)),
            Subject::Association(v) => (SubjectKind::Association, v.text(&mut self.vcode)),
        }
    }
}

/// `bytes` in lowercase hex, in `buf` (twice as long).
fn hex<'b>(bytes: &[u8], buf: &'b mut [u8]) -> &'b str {
    certs::hex_into(bytes, buf);
    std::str::from_utf8(&buf[..bytes.len() * 2]).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn operation_is_method_and_path_bounded_at_a_char_boundary() {
        let mut buf = [0; MAX_VALUE];
        assert_eq!(operation("GET", "/associations/association", &mut buf), "GET /associations/association");
        let long = format!("/{}", "é".repeat(200));
        let op = operation("POST", &long, &mut buf);
        assert!(op.len() <= MAX_VALUE && op.len() >= MAX_VALUE - 1, "{}", op.len());
        assert!(op.starts_with("POST /é"));
        // A method too long on its own leaves no room for the rest.
        let method = "M".repeat(300);
        assert_eq!(operation(&method, "/x", &mut buf), &method[..MAX_VALUE]);
    }

    #[test]
    fn texts_on_the_stack_are_those_the_owned_forms_give() {
        for id in [0u128, 1, u128::MAX, 0x0123_4567_89ab_cdef_fedc_ba98_7654_3210] {
            let id = ConsentId(id);
            assert_eq!(id.text(&mut [0; 34]), id.to_text());
        }
        let bytes: Vec<u8> = (0..=255).collect();
        let mut buf = [0; 512];
        assert_eq!(hex(&bytes, &mut buf), crate::audit::format::hex(&bytes));
        let mut d = Digits::default();
        let niss = policies::ids::Niss::parse("85073003328").unwrap();
        assert_eq!(d.of(Subject::Person(niss)), (SubjectKind::Person, "85073003328"));
        let kbo = policies::ids::Kbo::parse("0403019261").unwrap();
        assert_eq!(d.of(Subject::Organisation(kbo)), (SubjectKind::Organisation, "0403019261"));
    }
}
