//! The answer path of a built-in layout and of the registered one standing for it, `N` times,
//! for counting instructions under callgrind (noise-free, where the shared machine's timings
//! are not): `registered_cost {div|sigedis} {built-in|registered} N`. The cost of one answer is
//! the difference between runs with `N` and with 0, divided by `N`.

#![allow(clippy::unwrap_used, clippy::expect_used)]

#[path = "../benches/registered_defs.rs"]
mod defs;

use std::hint::black_box;

use adapters::{ServiceDef, xml};

fn half(service: &ServiceDef) -> Vec<&'static str> {
    let f = service.fields();
    f[..f.len().div_ceil(2)].to_vec()
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let (source, which, n) = (args[1].as_str(), args[2].as_str(), args[3].parse::<usize>().unwrap());
    match source {
        "div" => {
            let builtin = adapters::div::vehicle_service();
            let service = if which == "built-in" { builtin.clone() } else { defs::registered_vehicle() };
            let register = adapters::div::sandbox::Register::generate();
            let answer = xml::envelope(&register.vehicles()[0].doc).into_bytes();
            let granted = half(&builtin);
            let allow = |f: &str| granted.contains(&f);
            let soap = service.soap.unwrap();
            for _ in 0..n {
                let payload = soap.check_response(black_box(&answer)).unwrap();
                let reduced = xml::minimise(payload, &soap.response, &allow).unwrap();
                black_box(xml::envelope(&reduced));
            }
        }
        _ => {
            let builtin = adapters::sigedis::pensions_service();
            let service = if which == "built-in" { builtin.clone() } else { defs::registered_pensions() };
            // A pensioner's answer, recorded from the sandbox over a socket.
            let rt = tokio::runtime::Runtime::new().unwrap();
            let answer = rt.block_on(async {
                let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
                let server = adapters::sigedis::sandbox::serve(listener).unwrap();
                let mut d = [0u8; 11];
                let who = adapters::sigedis::sandbox::Register::persons()[0].digits(&mut d).to_owned();
                server.call(builtin.upstream_path, Some(&who), "").await.unwrap().1
            });
            let granted = half(&builtin);
            let allow = |f: &str| granted.contains(&f);
            let layout = adapters::layout::Layout::new(service.layout.unwrap()).unwrap();
            for _ in 0..n {
                let doc = adapters::layout::parse_answer(black_box(&answer)).unwrap();
                layout.check(&doc).unwrap();
                let out = layout.minimise(doc, allow);
                black_box(adapters::layout::write_answer(&out, answer.len()));
            }
        }
    }
}
