//! One audit record per call, granted or refused (DOMAIN.md §7): who (organisation,
//! certificate, end user), what (service, subjects, fields), when, why (instrument, purpose),
//! and the outcome.
//!
//! The canonical encoding is the record's JSON with keys in the order of this struct, no
//! whitespace, absent values as `null`; the writer prefixes `"seq":N` when it assigns the
//! sequence number, so the stored bytes are `{"seq":N,"kind":…}`.

use adapters::json_text::{push_str, push_u64};

use super::index::{Keys, Outgoing};
use serde::{Deserialize, Serialize};

/// What a record is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum RecordKind {
    /// A data-plane call (granted or refused).
    DataCall,
    /// A query of the audit trail by a designated person (itself audited).
    AuditQuery,
    /// A change of the policy (an instrument registered, a lifecycle step, an adhesion, a role,
    /// a bundle import): who made it and what changed, in `justification`.
    PolicyChange,
    /// TLS handshakes refused on an mTLS listener within one second, from one address with one
    /// certificate for one reason (`audit::attempts`): an attempted access.
    HandshakeRefused,
}

/// A data subject named in a call or found in its answer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", content = "id", rename_all = "kebab-case")]
pub enum SubjectRef {
    /// A national or BIS number (11 digits).
    Person(String),
    /// An enterprise number (10 digits).
    Organisation(String),
    /// An association's vCode.
    Association(String),
}

impl SubjectRef {
    /// What kind of subject it is.
    pub fn kind(&self) -> SubjectKind {
        match self {
            SubjectRef::Person(_) => SubjectKind::Person,
            SubjectRef::Organisation(_) => SubjectKind::Organisation,
            SubjectRef::Association(_) => SubjectKind::Association,
        }
    }

    /// The subject's `type` in the canonical encoding (its serde tag).
    pub fn type_name(&self) -> &'static str {
        self.kind().name()
    }

    /// The identifier itself.
    pub fn id(&self) -> &str {
        match self {
            SubjectRef::Person(s) | SubjectRef::Organisation(s) | SubjectRef::Association(s) => s,
        }
    }

    /// The index key of the subject: a type letter and the identifier.
    pub fn index_key(&self) -> String {
        let mut key = String::with_capacity(1 + self.id().len());
        key.push(char::from(self.kind().letter()));
        key.push_str(self.id());
        key
    }
}

/// The kind of a data subject, as records name it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SubjectKind {
    Person,
    Organisation,
    Association,
}

impl SubjectKind {
    /// The `type` the canonical encoding gives it (the serde tag of [`SubjectRef`]).
    pub fn name(self) -> &'static str {
        match self {
            SubjectKind::Person => "person",
            SubjectKind::Organisation => "organisation",
            SubjectKind::Association => "association",
        }
    }

    /// The letter that begins its index keys.
    pub fn letter(self) -> u8 {
        match self {
            SubjectKind::Person => b'P',
            SubjectKind::Organisation => b'O',
            SubjectKind::Association => b'A',
        }
    }
}

/// The record. Field order is the canonical key order.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Record {
    pub kind: RecordKind,
    /// Unix time in milliseconds when the call was received.
    pub time_ms: u64,
    pub request_id: String,
    /// W3C trace id (32 hex digits), when the call carried a trace context.
    pub trace_id: Option<String>,
    /// The calling organisation's enterprise number (10 digits), when the certificate named one.
    pub caller: Option<String>,
    /// SHA-256 of the client certificate (hex).
    pub cert_fingerprint: Option<String>,
    pub end_user: Option<String>,
    /// `test` or `production`.
    pub environment: Option<String>,
    /// Service id (`source.service`), when the path named one.
    pub service: Option<String>,
    /// HTTP method and path called.
    pub operation: String,
    /// The instrument reference named in `X-Legal-Basis`.
    pub legal_basis: Option<String>,
    /// The grant that permitted the call (or came closest to it).
    pub grant: Option<String>,
    pub purpose: Option<String>,
    pub subjects: Vec<SubjectRef>,
    /// The fields the grant lets the answer carry.
    pub fields: Vec<String>,
    /// The consent that permitted the call, for consent-based flows.
    pub consent_id: Option<String>,
    /// `granted` or `refused`.
    pub outcome: Outcome,
    /// HTTP status sent to the caller.
    pub status: u16,
    /// The refusal code, for refused calls.
    pub code: Option<String>,
    /// HTTP status of the source's answer, when it was called.
    pub upstream_status: Option<u16>,
    /// Time from receipt to the decision to answer, in microseconds (before the audit commit).
    pub latency_us: u64,
    /// For audit queries: the case reference and legal ground given. For policy changes: the
    /// version, the target and what changed.
    pub justification: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Outcome {
    Granted,
    Refused,
}

impl Record {
    /// A record of the control plane (an audit query, a policy change): who and what, with
    /// every data-call field empty.
    pub fn control(
        kind: RecordKind,
        time_ms: u64,
        request_id: String,
        caller: Option<String>,
        cert_fingerprint: Option<String>,
        operation: &str,
    ) -> Self {
        Record {
            kind,
            time_ms,
            request_id,
            trace_id: None,
            caller,
            cert_fingerprint,
            end_user: None,
            environment: None,
            service: None,
            operation: operation.to_owned(),
            legal_basis: None,
            grant: None,
            purpose: None,
            subjects: Vec::new(),
            fields: Vec::new(),
            consent_id: None,
            outcome: Outcome::Granted,
            status: 200,
            code: None,
            upstream_status: None,
            latency_us: 0,
            justification: None,
        }
    }

    /// The canonical bytes without the sequence number: `{"kind":…}`.
    pub fn canonical_without_seq(&self) -> Vec<u8> {
        // A data call's record is some hundreds of bytes: one allocation, not a doubling series.
        let mut out = Vec::with_capacity(1024);
        self.view().write(&mut out);
        out
    }

    /// The record's members, borrowed.
    #[allow(clippy::type_complexity, reason = "the iterators' own types, named once here")]
    pub fn view(
        &self,
    ) -> View<
        '_,
        std::iter::Map<std::slice::Iter<'_, SubjectRef>, fn(&SubjectRef) -> (SubjectKind, &str)>,
        std::iter::Map<std::slice::Iter<'_, String>, fn(&String) -> &str>,
    > {
        View {
            kind: self.kind,
            time_ms: self.time_ms,
            request_id: &self.request_id,
            trace_id: self.trace_id.as_deref(),
            caller: self.caller.as_deref(),
            cert_fingerprint: self.cert_fingerprint.as_deref(),
            end_user: self.end_user.as_deref(),
            environment: self.environment.as_deref(),
            service: self.service.as_deref(),
            operation: &self.operation,
            legal_basis: self.legal_basis.as_deref(),
            grant: self.grant.as_deref(),
            purpose: self.purpose.as_deref(),
            subjects: self.subjects.iter().map(|s| (s.kind(), s.id())),
            fields: self.fields.iter().map(String::as_str),
            consent_id: self.consent_id.as_deref(),
            outcome: self.outcome,
            status: self.status,
            code: self.code.as_deref(),
            upstream_status: self.upstream_status,
            latency_us: self.latency_us,
            justification: self.justification.as_deref(),
        }
    }
}

/// A record's members as the canonical encoding writes them, borrowed from wherever they are
/// held: [`Record::view`] gives an owned record's, and the data plane builds one from the
/// call's own state (the request's header values, the policy's names, digits on the stack),
/// so that a call's record is written without first being copied into a [`Record`].
///
/// `subjects` yields each subject's kind and identifier, `fields` each field's name.
#[derive(Debug, Clone)]
pub struct View<'a, S, F> {
    pub kind: RecordKind,
    pub time_ms: u64,
    pub request_id: &'a str,
    pub trace_id: Option<&'a str>,
    pub caller: Option<&'a str>,
    pub cert_fingerprint: Option<&'a str>,
    pub end_user: Option<&'a str>,
    pub environment: Option<&'a str>,
    pub service: Option<&'a str>,
    pub operation: &'a str,
    pub legal_basis: Option<&'a str>,
    pub grant: Option<&'a str>,
    pub purpose: Option<&'a str>,
    pub subjects: S,
    pub fields: F,
    pub consent_id: Option<&'a str>,
    pub outcome: Outcome,
    pub status: u16,
    pub code: Option<&'a str>,
    pub upstream_status: Option<u16>,
    pub latency_us: u64,
    pub justification: Option<&'a str>,
}

impl<'a, S, F> View<'a, S, F>
where
    S: Iterator<Item = (SubjectKind, &'a str)> + Clone,
    F: Iterator<Item = &'a str>,
{
    /// Appends the canonical bytes without the sequence number, `{"kind":…}`, to `o`.
    ///
    /// Written member by member, in [`Record`]'s order: the bytes `serde_json::to_vec` gives
    /// for the record (its `Serialize` derive is the reference, and a test holds the two equal
    /// on arbitrary records), at about a third of the instructions. It runs on the data plane,
    /// once per call.
    pub fn write(self, o: &mut Vec<u8>) {
        o.extend_from_slice(b"{\"kind\":\"");
        o.extend_from_slice(self.kind.as_str().as_bytes());
        o.extend_from_slice(b"\",\"time_ms\":");
        push_u64(o, self.time_ms);
        o.extend_from_slice(b",\"request_id\":");
        push_str(o, self.request_id);
        for (key, value) in [
            (&b",\"trace_id\":"[..], self.trace_id),
            (b",\"caller\":", self.caller),
            (b",\"cert_fingerprint\":", self.cert_fingerprint),
            (b",\"end_user\":", self.end_user),
            (b",\"environment\":", self.environment),
            (b",\"service\":", self.service),
        ] {
            o.extend_from_slice(key);
            push_opt(o, value);
        }
        o.extend_from_slice(b",\"operation\":");
        push_str(o, self.operation);
        for (key, value) in [
            (&b",\"legal_basis\":"[..], self.legal_basis),
            (b",\"grant\":", self.grant),
            (b",\"purpose\":", self.purpose),
        ] {
            o.extend_from_slice(key);
            push_opt(o, value);
        }
        o.extend_from_slice(b",\"subjects\":[");
        for (i, (kind, id)) in self.subjects.enumerate() {
            if i > 0 {
                o.push(b',');
            }
            o.extend_from_slice(b"{\"type\":\"");
            o.extend_from_slice(kind.name().as_bytes());
            o.extend_from_slice(b"\",\"id\":");
            push_str(o, id);
            o.push(b'}');
        }
        o.extend_from_slice(b"],\"fields\":[");
        for (i, f) in self.fields.enumerate() {
            if i > 0 {
                o.push(b',');
            }
            push_str(o, f);
        }
        o.extend_from_slice(b"],\"consent_id\":");
        push_opt(o, self.consent_id);
        o.extend_from_slice(b",\"outcome\":\"");
        o.extend_from_slice(self.outcome.as_str().as_bytes());
        o.extend_from_slice(b"\",\"status\":");
        push_u64(o, self.status.into());
        o.extend_from_slice(b",\"code\":");
        push_opt(o, self.code);
        o.extend_from_slice(b",\"upstream_status\":");
        match self.upstream_status {
            Some(s) => push_u64(o, s.into()),
            None => o.extend_from_slice(b"null"),
        }
        o.extend_from_slice(b",\"latency_us\":");
        push_u64(o, self.latency_us);
        o.extend_from_slice(b",\"justification\":");
        push_opt(o, self.justification);
        o.push(b'}');
    }

    /// The record on its way to the writer: its canonical bytes, then the keys the index
    /// files it under, in one buffer (see [`Outgoing`]).
    pub fn outgoing(self) -> Outgoing {
        let mut buf = Vec::with_capacity(1024);
        let (time_ms, caller, subjects) = (self.time_ms, self.caller, self.subjects.clone());
        self.write(&mut buf);
        let record = buf.len();
        Keys::push(&mut buf, caller, subjects);
        Outgoing { buf, record, time_ms }
    }
}

fn push_opt(out: &mut Vec<u8>, value: Option<&str>) {
    match value {
        Some(s) => push_str(out, s),
        None => out.extend_from_slice(b"null"),
    }
}

impl RecordKind {
    /// The name the canonical encoding gives the kind (its serde name).
    pub fn as_str(self) -> &'static str {
        match self {
            RecordKind::DataCall => "data-call",
            RecordKind::AuditQuery => "audit-query",
            RecordKind::PolicyChange => "policy-change",
            RecordKind::HandshakeRefused => "handshake-refused",
        }
    }
}

impl Outcome {
    /// The name the canonical encoding gives the outcome (its serde name).
    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Granted => "granted",
            Outcome::Refused => "refused",
        }
    }
}

/// Splices `"seq":N,` in front of a record's canonical bytes.
pub fn with_seq(seq: u64, canonical: &[u8], out: &mut Vec<u8>) {
    out.clear();
    out.extend_from_slice(b"{\"seq\":");
    push_u64(out, seq);
    if canonical.len() > 2 {
        out.push(b',');
        out.extend_from_slice(&canonical[1..]);
    } else {
        out.push(b'}');
    }
}

/// A stored record with its sequence number.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StoredRecord {
    pub seq: u64,
    #[serde(flatten)]
    pub record: Record,
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn canonical_bytes_start_with_seq_and_parse_back() {
        let r = Record {
            kind: RecordKind::DataCall,
            time_ms: 1,
            request_id: "r".into(),
            trace_id: None,
            caller: Some("0207123407".into()),
            cert_fingerprint: None,
            end_user: None,
            environment: Some("production".into()),
            service: Some("associations.association".into()),
            operation: "GET /associations/association".into(),
            legal_basis: Some("VL/PROT/2022/017".into()),
            grant: None,
            purpose: None,
            subjects: vec![SubjectRef::Association("V0001001".into())],
            fields: vec![],
            consent_id: None,
            outcome: Outcome::Refused,
            status: 403,
            code: Some("PURPOSE_NOT_ALLOWED".into()),
            upstream_status: None,
            latency_us: 5,
            justification: None,
        };
        let mut out = Vec::new();
        with_seq(42, &r.canonical_without_seq(), &mut out);
        let text = std::str::from_utf8(&out).unwrap();
        assert!(text.starts_with("{\"seq\":42,\"kind\":\"data-call\",\"time_ms\":1,"), "{text}");
        assert!(text.contains("\"subjects\":[{\"type\":\"association\",\"id\":\"V0001001\"}]"), "{text}");
        let back: StoredRecord = serde_json::from_slice(&out).unwrap();
        assert_eq!((back.seq, back.record), (42, r));
    }

    use proptest::prelude::*;

    fn text() -> impl Strategy<Value = String> {
        // Mostly what records hold, sometimes anything: quotes, backslashes, control characters.
        prop_oneof![3 => "[A-Za-z0-9 ./_:-]{0,40}", 1 => any::<String>()]
    }

    fn opt() -> impl Strategy<Value = Option<String>> {
        proptest::option::of(text())
    }

    fn record() -> impl Strategy<Value = Record> {
        let kind = prop_oneof![
            Just(RecordKind::DataCall),
            Just(RecordKind::AuditQuery),
            Just(RecordKind::PolicyChange),
            Just(RecordKind::HandshakeRefused)
        ];
        let subject = prop_oneof![
            text().prop_map(SubjectRef::Person),
            text().prop_map(SubjectRef::Organisation),
            text().prop_map(SubjectRef::Association)
        ];
        let who = (kind, any::<u64>(), text(), opt(), opt(), opt(), opt(), opt(), opt(), text(), opt(), opt());
        let what = (
            opt(),
            proptest::collection::vec(subject, 0..4),
            proptest::collection::vec(text(), 0..4),
            opt(),
            any::<bool>(),
            any::<u16>(),
            opt(),
            proptest::option::of(any::<u16>()),
            any::<u64>(),
            opt(),
        );
        (who, what).prop_map(|(w, x)| Record {
            kind: w.0,
            time_ms: w.1,
            request_id: w.2,
            trace_id: w.3,
            caller: w.4,
            cert_fingerprint: w.5,
            end_user: w.6,
            environment: w.7,
            service: w.8,
            operation: w.9,
            legal_basis: w.10,
            grant: w.11,
            purpose: x.0,
            subjects: x.1,
            fields: x.2,
            consent_id: x.3,
            outcome: if x.4 { Outcome::Granted } else { Outcome::Refused },
            status: x.5,
            code: x.6,
            upstream_status: x.7,
            latency_us: x.8,
            justification: x.9,
        })
    }

    proptest! {
        /// The hand-written encoding is the serde derive's, byte for byte.
        #[test]
        fn canonical_bytes_are_serde_json_bytes(r in record(), seq in any::<u64>()) {
            let canonical = r.canonical_without_seq();
            prop_assert_eq!(&canonical, &serde_json::to_vec(&r).unwrap());
            let mut out = Vec::new();
            with_seq(seq, &canonical, &mut out);
            prop_assert_eq!(out, serde_json::to_vec(&StoredRecord { seq, record: r }).unwrap());
        }
    }
}
