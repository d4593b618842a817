//! The Sigedis sandbox: a DB2P-like JSON service with a deterministic synthetic population.

use std::collections::HashMap;
use std::sync::Arc;

use http::StatusCode;
use policies::ids::{Kbo, Niss};
use serde_json::json;
use tokio::net::TcpListener;

use crate::sandbox::{self, SandboxRequest, SandboxResponse, SandboxServer};
use crate::synthetic::{Rng, people};

/// Seed of the Sigedis population.
pub const SEED: u64 = 0x5167_ED15;
/// How many persons the sandbox knows.
pub const POPULATION: usize = 5_000;

/// One supplementary pension plan.
#[derive(Debug, Clone)]
pub struct Plan {
    pub organiser: Kbo,
    pub institution: Kbo,
    pub plan_type: &'static str,
    pub acquired_reserves_cents: u64,
    pub acquired_benefits_cents: u64,
    pub situation_date: String,
}

/// The synthetic register: persons and their plans.
#[derive(Debug)]
pub struct Register {
    plans: HashMap<Niss, Vec<Plan>>,
}

impl Register {
    pub fn generate() -> Self {
        let mut rng = Rng::new(SEED ^ 0xA5A5);
        let institutions: Vec<Kbo> = (0..12).map(|_| rng.kbo()).collect();
        let types = ["defined-contribution", "defined-benefit", "cash-balance", "VAPZ", "IPT"];
        let mut plans = HashMap::with_capacity(POPULATION);
        for person in people(SEED, POPULATION) {
            let n = rng.range(1, 4) as usize;
            let v = (0..n)
                .map(|_| Plan {
                    organiser: rng.kbo(),
                    institution: institutions[rng.range(0, institutions.len() as u64) as usize],
                    plan_type: types[rng.range(0, types.len() as u64) as usize],
                    acquired_reserves_cents: rng.range(10_000, 25_000_000),
                    acquired_benefits_cents: rng.range(100_000, 90_000_000),
                    situation_date: format!("2026-01-{:02}", rng.range(1, 29)),
                })
                .collect();
            plans.insert(person, v);
        }
        Register { plans }
    }

    /// Persons known to the register, in a stable order.
    pub fn persons() -> Vec<Niss> {
        people(SEED, POPULATION)
    }

    pub fn plans(&self, niss: Niss) -> Option<&[Plan]> {
        self.plans.get(&niss).map(Vec::as_slice)
    }

    fn answer(&self, req: &SandboxRequest) -> SandboxResponse {
        if req.uri().path() != "/db2p/pensions" {
            return sandbox::text(StatusCode::NOT_FOUND, "unknown path");
        }
        let Some(subject) = req.headers().get("x-subject").and_then(|v| v.to_str().ok()) else {
            return sandbox::text(StatusCode::BAD_REQUEST, "X-Subject missing");
        };
        let Ok(niss) = Niss::parse(subject) else {
            return sandbox::text(StatusCode::BAD_REQUEST, "X-Subject is not a NISS");
        };
        let Some(plans) = self.plans(niss) else {
            return sandbox::json(StatusCode::NOT_FOUND, &json!({"error": "unknown person"}));
        };
        let mut digits = [0u8; 11];
        let plans: Vec<_> = plans
            .iter()
            .map(|p| {
                let mut o = [0u8; 10];
                let mut i = [0u8; 10];
                json!({
                    "organiser": p.organiser.digits(&mut o),
                    "institution": p.institution.digits(&mut i),
                    "planType": p.plan_type,
                    "acquiredReserves": p.acquired_reserves_cents as f64 / 100.0,
                    "acquiredBenefits": p.acquired_benefits_cents as f64 / 100.0,
                    "situationDate": p.situation_date,
                })
            })
            .collect();
        sandbox::json(StatusCode::OK, &json!({ "niss": niss.digits(&mut digits), "plans": plans }))
    }
}

/// Starts the Sigedis sandbox on `listener`.
pub fn serve(listener: TcpListener) -> std::io::Result<SandboxServer> {
    let register = Arc::new(Register::generate());
    sandbox::serve(listener, move |req| {
        let register = register.clone();
        async move { register.answer(&req) }
    })
}
