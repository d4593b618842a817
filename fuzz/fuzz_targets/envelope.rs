//! The data plane's envelope: arbitrary header lines, parsed for every kind of subject, plus
//! the trace-context and request-id headers. Nothing may panic; whatever is accepted must be
//! what the headers said.
#![no_main]

use adapters::SubjectKind;
use gateway::pipeline::envelope::{Envelope, RequestIds, TraceParent};
use http::{HeaderMap, HeaderName, HeaderValue};
use libfuzzer_sys::fuzz_target;

const NAMES: [&str; 7] =
    ["x-legal-basis", "x-purpose", "x-subject", "x-end-user", "traceparent", "x-request-id", "x-other"];

fuzz_target!(|data: &[u8]| {
    let mut h = HeaderMap::new();
    // Each line: a selector byte picking a known header name (or a raw name), then the value.
    for line in data.split(|&b| b == b'\n') {
        let Some((&sel, rest)) = line.split_first() else { continue };
        let name = match NAMES.get(sel as usize % (NAMES.len() + 1)) {
            Some(n) => HeaderName::from_static(n),
            None => match rest
                .iter()
                .position(|&b| b == b':')
                .map(|i| &rest[..i])
                .and_then(|n| HeaderName::from_bytes(n).ok())
            {
                Some(n) => n,
                None => continue,
            },
        };
        if let Ok(v) = HeaderValue::from_bytes(rest) {
            h.append(name, v);
        }
    }
    for kind in [SubjectKind::None, SubjectKind::Niss, SubjectKind::Kbo, SubjectKind::Association] {
        if let Ok(env) = Envelope::parse(&h, kind) {
            assert!(!env.legal_basis.is_empty() && !env.purpose.is_empty());
            assert_eq!(env.subject.is_some(), kind != SubjectKind::None);
        }
    }
    if let Some(tp) = std::str::from_utf8(data).ok().and_then(TraceParent::parse) {
        assert_eq!(TraceParent::parse(&tp.child(tp.parent_id)).map(|t| t.trace_id), Some(tp.trace_id));
    }
    let ids = RequestIds::new();
    // The caller's id when it sent a well-formed one, a fresh one otherwise; never empty.
    match (ids.take(&h), h.get("x-request-id")) {
        (Ok(v), Some(sent)) => assert_eq!(&v, sent),
        (Ok(v), None) => assert!(!v.is_empty()),
        (Err((generated, _)), sent) => assert!(!generated.is_empty() && sent.is_some()),
    }
});
