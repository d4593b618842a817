//! One audit record per call, granted or refused (DOMAIN.md §7): who (organisation,
//! certificate, end user), what (service, subjects, fields), when, why (instrument, purpose),
//! and the outcome.
//!
//! The canonical encoding is the record's JSON with keys in the order of this struct, no
//! whitespace, absent values as `null`; the writer prefixes `"seq":N` when it assigns the
//! sequence number, so the stored bytes are `{"seq":N,"kind":…}`.

use std::io::Write as _;

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
    /// The index key of the subject: a type letter and the identifier.
    pub fn index_key(&self) -> String {
        match self {
            SubjectRef::Person(s) => format!("P{s}"),
            SubjectRef::Organisation(s) => format!("O{s}"),
            SubjectRef::Association(s) => format!("A{s}"),
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
        // Serialising a struct of strings, numbers and enums cannot fail.
        if serde_json::to_writer(&mut out, self).is_err() {
            out.clear();
        }
        out
    }
}

/// Splices `"seq":N,` in front of a record's canonical bytes.
pub fn with_seq(seq: u64, canonical: &[u8], out: &mut Vec<u8>) {
    out.clear();
    out.extend_from_slice(b"{\"seq\":");
    // Into the buffer directly: writing to a Vec cannot fail.
    let _ = write!(out, "{seq}");
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
}
