//! The association register sandbox: deterministic synthetic associations.

use std::collections::HashMap;
use std::sync::Arc;

use http::StatusCode;
use policies::ids::{Iban, Kbo, Niss, VCode};
use serde_json::{Value, json};
use tokio::net::TcpListener;

use crate::sandbox::{self, SandboxRequest, SandboxResponse, SandboxServer};
use crate::synthetic::Rng;

pub const SEED: u64 = 0xA550_C1A7;
pub const POPULATION: usize = 4_000;

const NAMES: &[&str] =
    &["Harmonie", "Voetbalclub", "Jeugdhuis", "Buurtcomité", "Toneelkring", "Wielerclub", "Imkersbond"];
const PLACES: &[&str] = &["Gent", "Leuven", "Brugge", "Hasselt", "Mechelen", "Aalst", "Kortrijk", "Genk"];
const FIRST: &[&str] = &["An", "Bram", "Els", "Joris", "Lotte", "Pieter", "Sofie", "Wout"];
const LAST: &[&str] = &["Peeters", "Janssens", "Maes", "Jacobs", "Willems", "Claes", "Goossens"];

#[derive(Debug, Clone)]
pub struct Association {
    pub vcode: VCode,
    pub kbo: Option<Kbo>,
    pub active: bool,
    /// A de facto association that asked not to be published.
    pub opted_out: bool,
    pub doc: Value,
}

#[derive(Debug)]
pub struct Register {
    by_vcode: HashMap<VCode, Association>,
    by_kbo: HashMap<Kbo, VCode>,
}

impl Register {
    pub fn generate() -> Self {
        let mut rng = Rng::new(SEED);
        let mut by_vcode = HashMap::with_capacity(POPULATION);
        let mut by_kbo = HashMap::new();
        for i in 0..POPULATION {
            let Some(vcode) = VCode::from_number(VCode::FIRST + i as u32) else { continue };
            let de_facto = rng.range(0, 4) == 0;
            let kbo = (!de_facto).then(|| rng.kbo());
            let active = rng.range(0, 10) != 0;
            let opted_out = de_facto && rng.range(0, 3) == 0;
            let place = rng.pick(PLACES);
            let name = format!("{} {place}", rng.pick(NAMES));
            let reps: Vec<Value> = (0..rng.range(1, 4))
                .map(|_| {
                    let niss: Niss = rng.niss();
                    let mut d = [0u8; 11];
                    let first = rng.pick(FIRST);
                    let last = rng.pick(LAST);
                    json!({
                        "niss": niss.digits(&mut d),
                        "name": format!("{first} {last}"),
                        "email": format!("{}.{}@example.org", first.to_lowercase(), last.to_lowercase()),
                        "role": if rng.range(0, 2) == 0 { "chair" } else { "secretary" },
                    })
                })
                .collect();
            let iban: Iban = rng.iban();
            let mut kd = [0u8; 10];
            let doc = json!({
                "vCode": vcode.to_string(),
                "name": name,
                "status": if active { "active" } else { "inactive" },
                "legalForm": if de_facto { "de-facto" } else { "vzw" },
                "publicationOptOut": opted_out,
                "contact": { "email": format!("info@{}.example.org", place.to_lowercase()), "phone": format!("+32 9 {:03} {:02} {:02}", rng.range(100, 999), rng.range(10, 99), rng.range(10, 99)) },
                "purpose": "Promoting local community life",
                "classifications": [rng.pick(&["culture", "sport", "youth", "neighbourhood"])],
                "structure": { "umbrella": null, "sections": [] },
                "representatives": reps,
                "recognition": if rng.range(0, 2) == 0 { json!({"by": "municipality", "since": "2019-01-01"}) } else { Value::Null },
                "bankAccount": iban.to_string(),
                "enterpriseNumber": kbo.map(|k| k.digits(&mut kd).to_owned()),
            });
            if let Some(k) = kbo {
                by_kbo.insert(k, vcode);
            }
            by_vcode.insert(vcode, Association { vcode, kbo, active, opted_out, doc });
        }
        Register { by_vcode, by_kbo }
    }

    pub fn get(&self, vcode: VCode) -> Option<&Association> {
        self.by_vcode.get(&vcode)
    }

    /// The first `n` vCodes, for tests and the demo.
    pub fn vcodes(n: usize) -> Vec<VCode> {
        (0..n as u32).filter_map(|i| VCode::from_number(VCode::FIRST + i)).collect()
    }

    fn answer(&self, req: &SandboxRequest) -> SandboxResponse {
        if req.uri().path() != "/v1/verenigingen" {
            return sandbox::text(StatusCode::NOT_FOUND, "unknown path");
        }
        let Some(subject) = req.headers().get("x-subject").and_then(|v| v.to_str().ok()) else {
            return sandbox::text(StatusCode::BAD_REQUEST, "X-Subject missing");
        };
        let found = match (VCode::parse(subject), Kbo::parse(subject)) {
            (Ok(v), _) => self.get(v),
            (_, Ok(k)) => self.by_kbo.get(&k).and_then(|v| self.get(*v)),
            _ => {
                return sandbox::text(StatusCode::BAD_REQUEST, "X-Subject is neither a vCode nor an enterprise number");
            }
        };
        match found {
            Some(a) => sandbox::json(StatusCode::OK, &a.doc),
            None => sandbox::json(StatusCode::NOT_FOUND, &json!({"error": "unknown association"})),
        }
    }
}

/// Starts the association register sandbox on `listener`.
pub fn serve(listener: TcpListener) -> std::io::Result<SandboxServer> {
    let register = Arc::new(Register::generate());
    sandbox::serve(listener, move |req| {
        let register = register.clone();
        async move { register.answer(&req) }
    })
}
