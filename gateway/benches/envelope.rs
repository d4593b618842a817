//! The request envelope (DESIGN.md): the headers every call carries, parsed into the typed
//! envelope the decision reads — legal basis, purpose, a NISS checked by its mod-97 rule, the
//! end user and a W3C trace context.

#![allow(clippy::unwrap_used)]

use std::hint::black_box;

use adapters::SubjectKind;
use criterion::{Criterion, criterion_group, criterion_main};
use gateway::pipeline::envelope::Envelope;
use http::{HeaderMap, HeaderValue};

fn headers(pairs: &[(&'static str, &str)]) -> HeaderMap {
    let mut h = HeaderMap::new();
    for (k, v) in pairs {
        h.insert(*k, HeaderValue::from_str(v).unwrap());
    }
    h
}

fn bench(c: &mut Criterion) {
    let person = headers(&[
        ("x-legal-basis", "CSI/SSH/19/004/FI"),
        ("x-purpose", "SUPPLEMENTARY_PENSION_INFO"),
        ("x-subject", "85073003328"),
        ("x-end-user", "advisor-17"),
        ("traceparent", "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"),
        ("x-request-id", "r-0001"),
        ("content-type", "application/json"),
        ("user-agent", "bank-a-client/2.1"),
    ]);
    c.bench_function("envelope: NISS subject, end user, traceparent", |b| {
        b.iter(|| black_box(Envelope::parse(black_box(&person), SubjectKind::Niss).unwrap().purpose))
    });
    let association =
        headers(&[("x-legal-basis", "VL/PROT/2022/017"), ("x-purpose", "SUBSIDY_HANDLING"), ("x-subject", "V0001001")]);
    c.bench_function("envelope: vCode subject", |b| {
        b.iter(|| black_box(Envelope::parse(black_box(&association), SubjectKind::Association).unwrap().purpose))
    });
    let bad = headers(&[
        ("x-legal-basis", "VL/PROT/2022/017"),
        ("x-purpose", "SUBSIDY_HANDLING"),
        ("x-subject", "85073003329"),
    ]);
    c.bench_function("envelope: refused (NISS check digits)", |b| {
        b.iter(|| black_box(Envelope::parse(black_box(&bad), SubjectKind::Niss).is_err()))
    });
}

criterion_group!(benches, bench);
criterion_main!(benches);
