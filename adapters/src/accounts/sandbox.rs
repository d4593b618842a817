//! The sandbox of the Flemish account-number and contact-data sources (one register, both
//! protocols): synthetic citizens with a default value, values linked to some public
//! services, and the date they last validated them.

use std::collections::HashMap;
use std::sync::Arc;

use http::StatusCode;
use policies::ids::{Iban, Niss};
use serde_json::{Map, Value, json};
use tokio::net::TcpListener;

use super::PUBLIC_SERVICES;
use crate::sandbox::{self, SandboxRequest, SandboxResponse, SandboxServer};
use crate::synthetic::{Rng, people};

pub const SEED: u64 = 0xF1E3_15AA;
pub const POPULATION: usize = 3_000;

/// What the sources hold about one citizen.
#[derive(Debug, Clone)]
pub struct Citizen {
    pub default_iban: Option<Iban>,
    /// Accounts linked to particular public services.
    pub service_ibans: Vec<(&'static str, Iban)>,
    pub default_contact: Option<Value>,
    pub service_contacts: Vec<(&'static str, Value)>,
    pub last_validation: String,
}

#[derive(Debug)]
pub struct Register {
    citizens: HashMap<Niss, Citizen>,
}

fn contact(rng: &mut Rng, who: usize) -> Value {
    let mut m = Map::new();
    m.insert("email".into(), json!(format!("burger{who}.{}@example.org", rng.range(1, 99))));
    if rng.range(0, 2) == 0 {
        m.insert(
            "phone".into(),
            json!(format!("+32 9 {:03} {:02} {:02}", rng.range(100, 999), rng.range(10, 99), rng.range(10, 99))),
        );
    }
    m.insert(
        "mobile".into(),
        json!(format!(
            "+32 47{} {:02} {:02} {:02}",
            rng.range(0, 10),
            rng.range(10, 99),
            rng.range(10, 99),
            rng.range(10, 99)
        )),
    );
    m.insert("preferred".into(), json!(rng.pick(&["email", "mobile", "phone", "post"])));
    Value::Object(m)
}

impl Register {
    pub fn generate() -> Self {
        let mut rng = Rng::new(SEED ^ 0x77);
        let mut citizens = HashMap::with_capacity(POPULATION);
        for (i, niss) in people(SEED, POPULATION).into_iter().enumerate() {
            // The first citizen has a default and nothing linked (the fallback case); the
            // second has both; the rest vary.
            let default_iban = (i == 0 || rng.range(0, 10) != 0).then(|| rng.iban());
            let linked = if i == 0 {
                0
            } else if i == 1 {
                1
            } else {
                rng.range(0, 3) as usize
            };
            let mut services: Vec<&'static str> = Vec::new();
            while services.len() < linked {
                let s = rng.pick(PUBLIC_SERVICES);
                if !services.contains(&s) {
                    services.push(s);
                }
            }
            let service_ibans = services.iter().map(|s| (*s, rng.iban())).collect();
            let default_contact = (i == 0 || rng.range(0, 10) != 0).then(|| contact(&mut rng, i));
            let service_contacts = services.iter().map(|s| (*s, contact(&mut rng, i))).collect();
            let last_validation = format!("2026-{:02}-{:02}", rng.range(1, 11), rng.range(1, 29));
            citizens.insert(
                niss,
                Citizen { default_iban, service_ibans, default_contact, service_contacts, last_validation },
            );
        }
        Register { citizens }
    }

    /// The citizens, in a stable order: the first has a default and nothing linked to any
    /// service, the second has one service linked.
    pub fn persons() -> Vec<Niss> {
        people(SEED, POPULATION)
    }

    pub fn citizen(&self, niss: Niss) -> Option<&Citizen> {
        self.citizens.get(&niss)
    }

    fn answer(&self, req: &SandboxRequest) -> SandboxResponse {
        let accounts = match req.uri().path() {
            "/v1/rekeningnummers" => true,
            "/v1/contactgegevens" => false,
            _ => return sandbox::text(StatusCode::NOT_FOUND, "unknown path"),
        };
        let Some(niss) = req.headers().get("x-subject").and_then(|v| v.to_str().ok()).and_then(|s| Niss::parse(s).ok())
        else {
            return sandbox::text(StatusCode::BAD_REQUEST, "X-Subject is not a NISS");
        };
        let Some(service) = serde_json::from_slice::<Value>(req.body())
            .ok()
            .and_then(|v| v.get("publicService").and_then(Value::as_str).map(str::to_owned))
        else {
            return sandbox::text(StatusCode::BAD_REQUEST, "publicService missing");
        };
        let Some(c) = self.citizen(niss) else {
            return sandbox::json(StatusCode::NOT_FOUND, &json!({"error": "unknown citizen"}));
        };
        let mut d = [0u8; 11];
        let mut out = Map::new();
        out.insert("niss".into(), json!(niss.digits(&mut d)));
        out.insert("publicService".into(), json!(service));
        if accounts {
            if let Some((_, iban)) = c.service_ibans.iter().find(|(s, _)| *s == service) {
                out.insert("serviceIban".into(), json!(iban.to_string()));
            }
            if let Some(iban) = c.default_iban {
                out.insert("defaultIban".into(), json!(iban.to_string()));
            }
        } else {
            if let Some((_, v)) = c.service_contacts.iter().find(|(s, _)| *s == service) {
                out.insert("service".into(), v.clone());
            }
            if let Some(v) = &c.default_contact {
                out.insert("default".into(), v.clone());
            }
        }
        out.insert("lastValidation".into(), json!(c.last_validation));
        sandbox::json(StatusCode::OK, &Value::Object(out))
    }
}

/// Starts the sandbox on `listener`; it answers both the account-number and the contact-data
/// protocol.
pub fn serve(listener: TcpListener) -> std::io::Result<SandboxServer> {
    let register = Arc::new(Register::generate());
    sandbox::serve(listener, move |req| {
        let register = register.clone();
        async move { register.answer(&req) }
    })
}
