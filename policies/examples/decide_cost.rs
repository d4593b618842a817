//! `decide()` on the bench's permits, `N` times, for counting instructions under callgrind
//! (noise-free, where the shared machine's timings are not): `decide_cost {conditioned|bare}
//! N`. `conditioned` is the synthetic policy as the bench compiles it (every grant with a
//! network zone and a weekly window); `bare` the same policy without them. The cost of one
//! decision is the difference between runs with `N` and with 0, divided by `N`.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::hint::black_box;

use policies::model::Env;
use policies::{Query, Snapshot};

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let (which, n) = (args[1].as_str(), args[2].parse::<usize>().unwrap());
    let mut policy = policies::synthetic::policy(1_000, 10_000);
    if which == "bare" {
        for g in policy.instruments.iter_mut().flat_map(|i| i.grants.iter_mut()) {
            g.origin = None;
            g.when.clear();
        }
    }
    let snap = Snapshot::compile(&policy, 1);
    let mut permits = Vec::new();
    for k in (0..10_000).step_by(97) {
        let ins = &policy.instruments[2 + k / 10];
        let g = &ins.grants[k % 10];
        let policies::model::Recipient::Org(kbo) = g.recipient else { unreachable!() };
        permits.push(Query {
            caller: kbo,
            service: Box::leak(g.service.clone().into_boxed_str()),
            legal_basis: Box::leak(ins.reference.clone().into_boxed_str()),
            purpose: "COMMON",
            end_user: None,
            environment: Env::Production,
            now: 1_795_435_200,
            certificate: None,
            peer: Some(std::net::IpAddr::from([127, 0, 0, 1])),
        });
    }
    assert!(permits.iter().all(|q| snap.decide(q).is_permit()));
    for i in 0..n {
        black_box(snap.decide(black_box(&permits[i % permits.len()])));
    }
}
