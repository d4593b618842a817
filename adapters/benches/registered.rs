//! A registered layout against the built-in one it stands for, side by side in one run: the
//! answer path of `div.vehicle` with the shape compiled from `layouts/div.vehicle.xsd` by the
//! XSD subset compiler, and of `sigedis.pensions` with its JSON Schema registered through an
//! exposure, each against the adapter's compiled-in layout, on the same recorded answer and the
//! same grant (half of the fields).

#![allow(clippy::unwrap_used)]

use std::hint::black_box;

use adapters::layout::Layout;
use adapters::{ServiceDef, xml};
use criterion::{Criterion, criterion_group, criterion_main};

fn half(service: &ServiceDef) -> Vec<&'static str> {
    let f = service.fields();
    f[..f.len().div_ceil(2)].to_vec()
}

#[path = "registered_defs.rs"]
mod defs;
use defs::{registered_pensions, registered_vehicle};

fn bench(c: &mut Criterion) {
    // DIV: a vehicle as the sandbox answers it.
    let register = adapters::div::sandbox::Register::generate();
    let answer = xml::envelope(&register.vehicles()[0].doc).into_bytes();
    let builtin = adapters::div::vehicle_service();
    let granted = half(&builtin);
    let allow = |f: &str| granted.contains(&f);
    let mut g = c.benchmark_group("div.vehicle answer: check, minimise, write");
    for (name, service) in [("built-in", builtin.clone()), ("registered XSD", registered_vehicle())] {
        let soap = service.soap.unwrap();
        g.bench_function(name, |b| {
            b.iter(|| {
                let payload = soap.check_response(black_box(&answer)).unwrap();
                let reduced = xml::minimise(payload, &soap.response, &allow).unwrap();
                black_box(xml::envelope(&reduced))
            })
        });
    }
    g.finish();

    // Sigedis: a pensioner's answer recorded from the sandbox over a socket.
    let rt = tokio::runtime::Runtime::new().unwrap();
    let answer = rt.block_on(async {
        let server =
            adapters::sigedis::sandbox::serve(tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap()).unwrap();
        let mut d = [0u8; 11];
        let who = adapters::sigedis::sandbox::Register::persons()[0].digits(&mut d).to_owned();
        let (status, body) =
            server.call(adapters::sigedis::pensions_service().upstream_path, Some(&who), "").await.unwrap();
        assert_eq!(status, 200);
        body
    });
    let builtin = adapters::sigedis::pensions_service();
    let granted = half(&builtin);
    let allow = |f: &str| granted.contains(&f);
    let mut g = c.benchmark_group("sigedis.pensions answer: parse, check, minimise, write");
    for (name, service) in [("built-in", builtin.clone()), ("registered JSON Schema", registered_pensions())] {
        let layout = Layout::new(service.layout.unwrap()).unwrap();
        g.bench_function(name, |b| {
            b.iter(|| {
                let doc = adapters::layout::parse_answer(black_box(&answer)).unwrap();
                layout.check(&doc).unwrap();
                let out = layout.minimise(doc, allow);
                black_box(adapters::layout::write_answer(&out, answer.len()))
            })
        });
    }
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
