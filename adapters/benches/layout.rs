//! The answer path per source, as the gateway runs it on every permitted call: parse the
//! source's answer, check it against the published layout, reduce it to a grant's fields,
//! write it out. Answers are recorded from the real sandboxes over a socket first. The request
//! checks (JSON request schemas, the SOAP request) are measured too. Where a layout allows the
//! one-pass check (`adapters::stream`), it is measured beside the tree path, on the same answer.

#![allow(clippy::unwrap_used)]

use std::hint::black_box;

use adapters::layout::Layout;
use adapters::{ServiceDef, xml};
use criterion::{Criterion, criterion_group, criterion_main};

fn digits(p: &policies::ids::Niss) -> String {
    let mut d = [0u8; 11];
    p.digits(&mut d).to_owned()
}

/// Half of the service's fields, as a narrower grant would give.
fn half(service: &ServiceDef) -> Vec<&'static str> {
    let f = service.fields();
    f[..f.len().div_ceil(2)].to_vec()
}

fn bench(c: &mut Criterion) {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let recorded = rt.block_on(async {
        let bind = || async { tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap() };
        let assoc = adapters::associations::sandbox::serve(bind().await).unwrap();
        let sigedis = adapters::sigedis::sandbox::serve(bind().await).unwrap();
        let rn = adapters::rn::sandbox::serve(bind().await).unwrap();
        let flemish = adapters::accounts::sandbox::serve(bind().await).unwrap();
        let div = adapters::div::sandbox::serve(bind().await).unwrap();
        let vcode = adapters::associations::sandbox::Register::vcodes(1)[0].to_string();
        let pensioner = digits(&adapters::sigedis::sandbox::Register::persons()[0]);
        let resident = digits(&adapters::rn::sandbox::Register::persons()[0]);
        let citizen = digits(&adapters::accounts::sandbox::Register::persons()[1]);
        let public_service = serde_json::json!({ "publicService": adapters::accounts::PUBLIC_SERVICES[0] }).to_string();
        let plate = adapters::div::sandbox::Register::generate().vehicles()[0].plate.to_string();
        let div_request = adapters::div::request_by_plate(&plate);
        let mut out: Vec<(ServiceDef, Vec<u8>, String)> = Vec::new();
        for (service, server, subject, body) in [
            (adapters::associations::association_service(), &assoc, Some(vcode.as_str()), String::new()),
            (adapters::sigedis::pensions_service(), &sigedis, Some(pensioner.as_str()), String::new()),
            (adapters::rn::person_service(), &rn, Some(resident.as_str()), String::new()),
            (adapters::accounts::iban_service(), &flemish, Some(citizen.as_str()), public_service.clone()),
            (adapters::contacts::contact_service(), &flemish, Some(citizen.as_str()), public_service.clone()),
            (adapters::div::vehicle_service(), &div, None, div_request.clone()),
        ] {
            let (status, answer) = server.call(service.upstream_path, subject, &body).await.unwrap();
            assert_eq!(status, 200, "{}", service.id);
            out.push((service, answer, body));
        }
        out
    });
    for (service, answer, request) in recorded {
        let granted = half(&service);
        let allow = |f: &str| granted.contains(&f);
        if let Some(def) = service.layout {
            let layout = Layout::new(def).unwrap();
            c.bench_function(
                &format!("answer {} ({} bytes): parse, check, minimise, write", service.id, answer.len()),
                |b| {
                    b.iter(|| {
                        let doc = adapters::layout::parse_answer(black_box(&answer)).unwrap();
                        layout.check(&doc).unwrap();
                        let out = layout.minimise(doc, allow);
                        black_box(adapters::layout::write_answer(&out, answer.len()))
                    })
                },
            );
            if layout.has_one_pass() {
                c.bench_function(&format!("answer {} ({} bytes): one pass", service.id, answer.len()), |b| {
                    b.iter(|| black_box(layout.one_pass(black_box(&answer), allow).unwrap()))
                });
            }
            if def.request_schema.is_some() {
                c.bench_function(&format!("request {}: check", service.id), |b| {
                    b.iter(|| black_box(layout.check_request(black_box(request.as_bytes())).unwrap()))
                });
            }
        } else if let Some(soap) = &service.soap {
            c.bench_function(
                &format!("answer {} ({} bytes): parse, check, minimise, write", service.id, answer.len()),
                |b| {
                    b.iter(|| {
                        let payload = soap.check_response(black_box(&answer)).unwrap();
                        let reduced = xml::minimise(payload, &soap.response, &allow).unwrap();
                        black_box(xml::envelope(&reduced))
                    })
                },
            );
            c.bench_function(&format!("request {}: open the envelope, check", service.id), |b| {
                b.iter(|| black_box(soap.check_request(black_box(request.as_bytes())).unwrap()))
            });
        }
    }
}

criterion_group!(benches, bench);
criterion_main!(benches);
