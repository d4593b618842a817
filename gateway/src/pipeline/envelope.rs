//! Step 4 — the request envelope (DESIGN.md): the headers that say on which legal basis, for
//! which purpose, about whom and by whom a call is made. Stands after routing (the service
//! says whether a subject is required) and before authorization (which reads it).
//!
//! Everything is borrowed from the request headers; identifiers are parsed into their typed
//! form here, so a bad NISS is refused with `SUBJECT_INVALID` before any policy is consulted.

use std::sync::atomic::{AtomicU64, Ordering};

use adapters::SubjectKind;
use certs::{hex_encode, hex_into};
use http::{HeaderMap, HeaderName, HeaderValue};
use policies::ids::{Kbo, Niss, VCode};

use crate::error::{Code, Refusal};

// Header names as `HeaderName`s: a lookup by one hashes it as it is, where a `&str` would be
// checked and lower-cased again on every request.
pub const LEGAL_BASIS: HeaderName = HeaderName::from_static("x-legal-basis");
pub const PURPOSE: HeaderName = HeaderName::from_static("x-purpose");
pub const SUBJECT: HeaderName = HeaderName::from_static("x-subject");
pub const END_USER: HeaderName = HeaderName::from_static("x-end-user");
pub const REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");
pub const TRACEPARENT: HeaderName = HeaderName::from_static("traceparent");
/// Tells the source which organisation receives the data.
pub const RECIPIENT: HeaderName = HeaderName::from_static("x-passerelle-recipient");

const MAX_LEGAL_BASIS: usize = 128;
const MAX_PURPOSE: usize = 64;
const MAX_END_USER: usize = 128;
const MAX_REQUEST_ID: usize = 128;

/// The data subject a call is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Subject {
    Person(Niss),
    Organisation(Kbo),
    Association(VCode),
}

/// A W3C Trace Context `traceparent` (version 00).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TraceParent {
    pub trace_id: [u8; 16],
    pub parent_id: [u8; 8],
    pub flags: u8,
}

impl TraceParent {
    /// Parses `00-<32 hex>-<16 hex>-<2 hex>`; an all-zero id is invalid (W3C §3.2.2).
    pub fn parse(s: &str) -> Option<Self> {
        let b = s.as_bytes();
        if b.len() != 55 || &b[0..3] != b"00-" || b[35] != b'-' || b[52] != b'-' {
            return None;
        }
        let mut trace_id = [0u8; 16];
        let mut parent_id = [0u8; 8];
        let mut flags = [0u8; 1];
        hex_decode(&b[3..35], &mut trace_id)?;
        hex_decode(&b[36..52], &mut parent_id)?;
        hex_decode(&b[53..55], &mut flags)?;
        if trace_id == [0; 16] || parent_id == [0; 8] {
            return None;
        }
        Some(TraceParent { trace_id, parent_id, flags: flags[0] })
    }

    /// The header value for the next hop, with `span_id` as the new parent.
    pub fn child(&self, span_id: [u8; 8]) -> String {
        let mut s = String::with_capacity(55);
        s.push_str("00-");
        hex_encode(&self.trace_id, &mut s);
        s.push('-');
        hex_encode(&span_id, &mut s);
        s.push('-');
        hex_encode(&[self.flags], &mut s);
        s
    }
}

fn hex_decode(src: &[u8], out: &mut [u8]) -> Option<()> {
    fn nib(c: u8) -> Option<u8> {
        match c {
            b'0'..=b'9' => Some(c - b'0'),
            b'a'..=b'f' => Some(c - b'a' + 10),
            _ => None, // W3C: lowercase only
        }
    }
    for (i, o) in out.iter_mut().enumerate() {
        *o = nib(src[2 * i])? << 4 | nib(src[2 * i + 1])?;
    }
    Some(())
}

/// The parsed envelope of one request, borrowing from its headers.
#[derive(Debug, Clone, Copy)]
pub struct Envelope<'a> {
    /// Reference of the instrument relied on.
    pub legal_basis: &'a str,
    /// Purpose / capacity code.
    pub purpose: &'a str,
    pub subject: Option<Subject>,
    /// The person behind the call, for individual accountability.
    pub end_user: Option<&'a str>,
    /// Incoming trace context, if valid (an invalid one is ignored, as W3C prescribes).
    pub traceparent: Option<TraceParent>,
}

fn header<'a>(h: &'a HeaderMap, name: &HeaderName, max: usize) -> Result<Option<&'a str>, Refusal> {
    let mut values = h.get_all(name).iter();
    let Some(v) = values.next() else { return Ok(None) };
    if values.next().is_some() {
        return Err(Refusal::new(Code::EnvelopeInvalid, format!("header {name} appears more than once")));
    }
    let s = v
        .to_str()
        .map_err(|_| Refusal::new(Code::EnvelopeInvalid, format!("header {name} must be visible ASCII")))?
        .trim();
    if s.is_empty() {
        return Err(Refusal::new(Code::EnvelopeInvalid, format!("header {name} is empty")));
    }
    if s.len() > max {
        return Err(Refusal::new(Code::EnvelopeInvalid, format!("header {name} is longer than {max} characters")));
    }
    Ok(Some(s))
}

fn required<'a>(h: &'a HeaderMap, name: &HeaderName, max: usize) -> Result<&'a str, Refusal> {
    header(h, name, max)?.ok_or_else(|| Refusal::new(Code::EnvelopeInvalid, format!("header {name} is required")))
}

impl<'a> Envelope<'a> {
    /// Parses the envelope for a service whose subject is of kind `subject`.
    pub fn parse(h: &'a HeaderMap, subject: SubjectKind) -> Result<Self, Refusal> {
        let legal_basis = required(h, &LEGAL_BASIS, MAX_LEGAL_BASIS)?;
        let purpose = required(h, &PURPOSE, MAX_PURPOSE)?;
        let raw_subject = header(h, &SUBJECT, 32)?;
        let subject = match (subject, raw_subject) {
            (SubjectKind::None, None) => None,
            (SubjectKind::None, Some(_)) => {
                return Err(Refusal::new(Code::EnvelopeInvalid, "this service takes no X-Subject header"));
            }
            (_, None) => {
                return Err(Refusal::new(Code::SubjectInvalid, "header x-subject is required by this service"));
            }
            (SubjectKind::Niss, Some(s)) => {
                Some(Subject::Person(Niss::parse(s).map_err(|e| Refusal::new(Code::SubjectInvalid, e.to_string()))?))
            }
            (SubjectKind::Kbo, Some(s)) => Some(Subject::Organisation(
                Kbo::parse(s).map_err(|e| Refusal::new(Code::SubjectInvalid, e.to_string()))?,
            )),
            (SubjectKind::Association, Some(s)) if s.starts_with('V') => Some(Subject::Association(
                VCode::parse(s).map_err(|e| Refusal::new(Code::SubjectInvalid, e.to_string()))?,
            )),
            (SubjectKind::Association, Some(s)) => Some(Subject::Organisation(Kbo::parse(s).map_err(|e| {
                Refusal::new(Code::SubjectInvalid, format!("expected a vCode or an enterprise number; {e}"))
            })?)),
        };
        let end_user = header(h, &END_USER, MAX_END_USER)?;
        let traceparent = h.get(&TRACEPARENT).and_then(|v| v.to_str().ok()).and_then(TraceParent::parse);
        Ok(Envelope { legal_basis, purpose, subject, end_user, traceparent })
    }
}

/// Request ids: the caller's `X-Request-Id` when it is well-formed, otherwise one generated
/// from a per-process random prefix and a counter (unique, cheap, not guessable across runs).
#[derive(Debug)]
pub struct RequestIds {
    prefix: u64,
    counter: AtomicU64,
    /// The prefix in hex and the dash after it: the start of every id made here.
    head: [u8; 17],
}

impl RequestIds {
    pub fn new() -> Self {
        let mut seed = [0u8; 8];
        // A failing system RNG only makes ids predictable, never wrong: fall back to the clock.
        if ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut seed).is_err() {
            seed = (std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default().as_nanos()
                as u64)
                .to_be_bytes();
        }
        let mut head = [b'-'; 17];
        hex_into(&seed, &mut head);
        RequestIds { prefix: u64::from_be_bytes(seed), counter: AtomicU64::new(0), head }
    }

    /// Takes the caller's id or makes one. `Err` carries a fresh id and the refusal for a
    /// malformed one (the response must still echo an id).
    pub fn take(&self, h: &HeaderMap) -> Result<HeaderValue, (HeaderValue, Refusal)> {
        match h.get(&REQUEST_ID) {
            None => Ok(self.generate()),
            Some(v) if Self::well_formed(v.as_bytes()) => Ok(v.clone()),
            Some(_) => Err((
                self.generate(),
                Refusal::new(
                    Code::EnvelopeInvalid,
                    format!("header x-request-id must be 1 to {MAX_REQUEST_ID} characters of [A-Za-z0-9._:-]"),
                ),
            )),
        }
    }

    fn well_formed(b: &[u8]) -> bool {
        !b.is_empty()
            && b.len() <= MAX_REQUEST_ID
            && b.iter().all(|c| c.is_ascii_alphanumeric() || matches!(c, b'.' | b'_' | b':' | b'-'))
    }

    pub fn generate(&self) -> HeaderValue {
        let n = self.counter.fetch_add(1, Ordering::Relaxed);
        let mut id = [0u8; 33];
        id[..17].copy_from_slice(&self.head);
        hex_into(&n.to_be_bytes(), &mut id[17..]);
        // INVARIANT: hex digits and '-' are valid header characters.
        HeaderValue::from_bytes(&id).unwrap_or(HeaderValue::from_static("unidentified"))
    }

    /// A fresh span id for the next hop of a trace.
    pub fn span_id(&self) -> [u8; 8] {
        let n = self.counter.fetch_add(1, Ordering::Relaxed);
        (self.prefix ^ n.wrapping_mul(0x9E37_79B9_7F4A_7C15)).to_be_bytes()
    }
}

impl Default for RequestIds {
    fn default() -> Self {
        Self::new()
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn headers(pairs: &[(HeaderName, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.append(k.clone(), HeaderValue::from_str(v).unwrap());
        }
        h
    }

    #[test]
    fn parses_a_full_envelope() {
        let h = headers(&[
            (LEGAL_BASIS, "CSI/AF/18/2023"),
            (PURPOSE, "INSURANCE_CLAIM"),
            (SUBJECT, "85.07.30-033.28"),
            (END_USER, "agent-42"),
            (TRACEPARENT, "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"),
        ]);
        let e = Envelope::parse(&h, SubjectKind::Niss).unwrap();
        assert_eq!(e.legal_basis, "CSI/AF/18/2023");
        assert_eq!(e.subject, Some(Subject::Person(Niss::parse("85073003328").unwrap())));
        assert_eq!(e.end_user, Some("agent-42"));
        let tp = e.traceparent.unwrap();
        assert_eq!(tp.flags, 1);
        assert!(tp.child([1; 8]).starts_with("00-4bf92f3577b34da6a3ce929d0e0e4736-0101010101010101-01"));
    }

    #[test]
    fn refusals_name_the_header() {
        let e = Envelope::parse(&headers(&[(PURPOSE, "P")]), SubjectKind::None).unwrap_err();
        assert_eq!(e.code, Code::EnvelopeInvalid);
        assert!(e.detail.contains("x-legal-basis"));
        let e = Envelope::parse(
            &headers(&[(LEGAL_BASIS, "L"), (PURPOSE, "P"), (SUBJECT, "85073003329")]),
            SubjectKind::Niss,
        )
        .unwrap_err();
        assert_eq!(e.code, Code::SubjectInvalid);
        assert!(!e.detail.contains("85073003329"));
        let e = Envelope::parse(&headers(&[(LEGAL_BASIS, "L"), (LEGAL_BASIS, "M"), (PURPOSE, "P")]), SubjectKind::None)
            .unwrap_err();
        assert!(e.detail.contains("more than once"));
        let e = Envelope::parse(&headers(&[(LEGAL_BASIS, "L"), (PURPOSE, "P")]), SubjectKind::Kbo).unwrap_err();
        assert_eq!(e.code, Code::SubjectInvalid);
    }

    #[test]
    fn bad_traceparent_is_ignored_and_request_ids_are_checked() {
        assert!(TraceParent::parse("00-00000000000000000000000000000000-00f067aa0ba902b7-01").is_none());
        assert!(TraceParent::parse("00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01").is_none());
        let ids = RequestIds::new();
        let a = ids.generate();
        let b = ids.generate();
        assert_ne!(a, b);
        assert_eq!(a.to_str().unwrap(), format!("{:016x}-{:016x}", ids.prefix, 0));
        assert_eq!(b.to_str().unwrap(), format!("{:016x}-{:016x}", ids.prefix, 1));
        assert_eq!(ids.take(&headers(&[(REQUEST_ID, "abc-1")])).unwrap(), "abc-1");
        assert!(ids.take(&headers(&[(REQUEST_ID, "a b")])).is_err());
    }
}
