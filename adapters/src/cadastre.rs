//! SPF Finances' cadastre (seed 004), as a source *outside* the gateway's catalogue: nothing
//! here is compiled into the gateway's routes. SPF Finances registers the service
//! `cadastre.cadastral-income` through the control plane with [`RESPONSE_SCHEMA`] as its imposed
//! layout; this module is only the source's side, a real HTTP server with a deterministic
//! synthetic register (`GET` [`UPSTREAM_PATH`], the owner's national number in `X-Subject`),
//! for the demo and the tests.

use std::sync::Arc;

use http::StatusCode;
use policies::ids::Niss;
use serde_json::{Value, json};
use tokio::net::TcpListener;

use crate::sandbox::{self, SandboxRequest, SandboxResponse, SandboxServer};
use crate::synthetic::Rng;

/// The imposed layout of the answer (JSON Schema 2020-12), as SPF Finances publishes it.
pub const RESPONSE_SCHEMA: &str = include_str!("../layouts/cadastre.cadastral-income.response.schema.json");
/// Where the source answers.
pub const UPSTREAM_PATH: &str = "/cadastre/v1/income";

const TOWNS: &[&str] = &["Leuven", "Namur", "Mechelen", "Mons", "Hasselt", "Kortrijk"];

/// The parcels of `owner`: one to three, the same every time.
pub fn parcels(owner: Niss) -> Value {
    let mut d = [0u8; 11];
    let digits = owner.digits(&mut d).to_owned();
    let mut rng = Rng::new(digits.parse::<u64>().unwrap_or(0) ^ 0xCAD4_57E0);
    let n = rng.range(1, 4);
    let parcels: Vec<Value> = (0..n)
        .map(|_| {
            let co: Vec<Value> = (0..rng.range(0, 2))
                .map(|_| {
                    let mut b = [0u8; 11];
                    json!({ "niss": rng.niss().digits(&mut b) })
                })
                .collect();
            let section = char::from(b'A' + rng.range(0, 8) as u8);
            json!({
                "parcel": format!("{:05}{section}{:04}/{:02}{}{:03}", rng.range(10000, 99999), rng.range(1, 9999),
                    rng.range(0, 99), char::from(b'A' + rng.range(0, 26) as u8), rng.range(0, 999)),
                "municipality": rng.pick(TOWNS),
                "cadastralIncome": rng.range(300, 4000),
                "share": if co.is_empty() { "1/1".to_owned() } else { format!("1/{}", co.len() + 1) },
                "coOwners": co,
            })
        })
        .collect();
    json!({ "niss": digits, "parcels": parcels })
}

fn answer(req: &SandboxRequest) -> SandboxResponse {
    if req.uri().path() != UPSTREAM_PATH {
        return sandbox::text(StatusCode::NOT_FOUND, "unknown path");
    }
    let subject = req.headers().get("x-subject").and_then(|v| v.to_str().ok()).and_then(|s| Niss::parse(s).ok());
    match subject {
        Some(owner) => sandbox::json(StatusCode::OK, &parcels(owner)),
        None => sandbox::text(StatusCode::BAD_REQUEST, "X-Subject must hold a national number"),
    }
}

/// What SPF Finances posts to `POST /services` to register `cadastre.cadastral-income` on its
/// source `cadastre` (the fields are left to the catalogue).
pub fn registration() -> Value {
    let schema: Value = serde_json::from_str(RESPONSE_SCHEMA).unwrap_or_default();
    json!({
        "id": "cadastre.cadastral-income", "source": "cadastre",
        "exposure": {
            "method": "GET", "path": "/cadastre/cadastral-income", "upstream_path": UPSTREAM_PATH,
            "dialect": "json", "subject": "niss",
            "layout": { "response_schema": schema },
            "catalogue": [
                { "path": "/niss", "subject": "person" },
                { "field": "parcel", "path": "/parcels/*/parcel" },
                { "field": "municipality", "path": "/parcels/*/municipality" },
                { "field": "cadastralIncome", "path": "/parcels/*/cadastralIncome" },
                { "field": "share", "path": "/parcels/*/share" },
                { "field": "coOwners", "path": "/parcels/*/coOwners" },
                { "path": "/parcels/*/coOwners/*/niss", "subject": "person" }
            ]
        }
    })
}

/// Starts the cadastre on `listener`.
pub fn serve(listener: TcpListener) -> std::io::Result<SandboxServer> {
    let answer = Arc::new(answer);
    sandbox::serve(listener, move |req| {
        let answer = answer.clone();
        async move { answer(&req) }
    })
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn every_answer_follows_the_layout() {
        let schema: Value = serde_json::from_str(RESPONSE_SCHEMA).unwrap();
        let v = jsonschema::validator_for(&schema).unwrap();
        for owner in crate::synthetic::people(7, 200) {
            let a = parcels(owner);
            assert!(v.is_valid(&a), "{a}");
        }
    }
}
