//! The National Register sandbox: synthetic persons (national and BIS numbers) whose birth
//! date and sex agree with their number.

use std::collections::HashMap;
use std::sync::Arc;

use http::StatusCode;
use policies::ids::{Niss, Sex};
use serde_json::{Value, json};
use tokio::net::TcpListener;

use crate::sandbox::{self, SandboxRequest, SandboxResponse, SandboxServer};
use crate::synthetic::Rng;

pub const SEED: u64 = 0x0A71_0A11;
pub const POPULATION: usize = 3_000;
/// How many of them have a BIS number (no national register number).
pub const BIS: usize = 100;

const FIRST_M: &[&str] = &["Jan", "Pieter", "Luc", "Mohamed", "Thomas", "Arnaud", "Wouter"];
const FIRST_F: &[&str] = &["Marie", "Sofie", "Fatima", "Els", "Julie", "Nathalie", "Lotte"];
const LAST: &[&str] = &["Peeters", "Janssens", "Dubois", "Lambert", "El Amrani", "Claes", "Wouters", "Dupont"];
const PLACES: &[(&str, &str)] =
    &[("1000", "Brussel"), ("9000", "Gent"), ("4000", "Liège"), ("2000", "Antwerpen"), ("5000", "Namur")];
const STREETS: &[&str] = &["Kerkstraat", "Rue de la Station", "Molenweg", "Grote Markt", "Avenue Louise"];

#[derive(Debug)]
pub struct Register {
    persons: HashMap<Niss, Value>,
    order: Vec<Niss>,
}

impl Register {
    pub fn generate() -> Self {
        let mut rng = Rng::new(SEED);
        let mut persons = HashMap::with_capacity(POPULATION);
        let mut order = Vec::with_capacity(POPULATION);
        while order.len() < POPULATION {
            let year = rng.range(1935, 2024) as u16;
            let month = rng.range(1, 13) as u8;
            let day = rng.range(1, 29) as u8;
            let bis = order.len() < BIS;
            let Some(niss) =
                Niss::from_parts(year, if bis { month + 40 } else { month }, day, rng.range(1, 999) as u16)
            else {
                continue;
            };
            if persons.contains_key(&niss) {
                continue;
            }
            let sex = niss.sex();
            let first = match sex {
                Some(Sex::Male) => rng.pick(FIRST_M),
                _ => rng.pick(FIRST_F),
            };
            let (postal, town) = PLACES[rng.range(0, PLACES.len() as u64) as usize];
            let (_, birth_town) = PLACES[rng.range(0, PLACES.len() as u64) as usize];
            let mut d = [0u8; 11];
            let doc = json!({
                "niss": niss.digits(&mut d),
                "names": { "last": rng.pick(LAST), "first": [first] },
                "birthDate": format!("{year:04}-{month:02}-{day:02}"),
                "birthPlace": birth_town,
                "address": {
                    "street": rng.pick(STREETS),
                    "number": rng.range(1, 200).to_string(),
                    "postalCode": postal,
                    "municipality": town,
                },
                "sex": match sex { Some(Sex::Male) => "M", Some(Sex::Female) => "F", None => "unknown" },
            });
            persons.insert(niss, doc);
            order.push(niss);
        }
        Register { persons, order }
    }

    /// The persons, in a stable order (the first [`BIS`] have BIS numbers).
    pub fn persons() -> Vec<Niss> {
        Register::generate().order
    }

    /// A person's record, as the register answers it.
    pub fn person(&self, niss: Niss) -> Option<&Value> {
        self.persons.get(&niss)
    }

    /// Persons whose last name (case-insensitive), birth date and, if given, first name match.
    pub fn search(&self, last: &str, first: Option<&str>, birth: &str) -> Vec<&Value> {
        self.order
            .iter()
            .filter_map(|n| self.persons.get(n))
            .filter(|p| {
                p["birthDate"] == birth
                    && p["names"]["last"].as_str().is_some_and(|l| l.eq_ignore_ascii_case(last))
                    && first.is_none_or(|f| {
                        p["names"]["first"]
                            .as_array()
                            .is_some_and(|v| v.iter().any(|x| x.as_str().is_some_and(|x| x.eq_ignore_ascii_case(f))))
                    })
            })
            .take(50)
            .collect()
    }

    fn answer(&self, req: &SandboxRequest) -> SandboxResponse {
        if req.uri().path() == "/v1/persons/search" {
            let Ok(q) = serde_json::from_slice::<Value>(req.body()) else {
                return sandbox::text(StatusCode::BAD_REQUEST, "the body is not JSON");
            };
            let (Some(last), Some(birth)) = (q["lastName"].as_str(), q["birthDate"].as_str()) else {
                return sandbox::text(StatusCode::BAD_REQUEST, "lastName and birthDate are required");
            };
            let found = self.search(last, q["firstName"].as_str(), birth);
            return sandbox::json(StatusCode::OK, &json!({ "persons": found }));
        }
        if req.uri().path() != "/v1/persons" {
            return sandbox::text(StatusCode::NOT_FOUND, "unknown path");
        }
        let Some(niss) = req.headers().get("x-subject").and_then(|v| v.to_str().ok()).and_then(|s| Niss::parse(s).ok())
        else {
            return sandbox::text(StatusCode::BAD_REQUEST, "X-Subject is not a NISS or BIS number");
        };
        match self.persons.get(&niss) {
            Some(doc) => sandbox::json(StatusCode::OK, &with_contact(doc)),
            None => sandbox::json(StatusCode::NOT_FOUND, &json!({"error": "unknown person"})),
        }
    }
}

/// A person's record with the contact data the person gave to be contacted (seed 003: e-mail,
/// language and phone, processed with the person's consent), derived from the record so that
/// the generated register stays as it is.
pub fn with_contact(doc: &Value) -> Value {
    let mut doc = doc.clone();
    let last = doc["names"]["last"].as_str().unwrap_or_default().to_ascii_lowercase();
    let first = doc["names"]["first"][0].as_str().unwrap_or_default().to_ascii_lowercase();
    let postal: u32 = doc["address"]["postalCode"].as_str().and_then(|p| p.parse().ok()).unwrap_or(1000);
    // Brussels and Wallonia (1000–1299, 1300–1499, 4000–7999) French; Flanders Dutch.
    let language = if (1000..1500).contains(&postal) || (4000..8000).contains(&postal) { "fr" } else { "nl" };
    let digits: String = doc["niss"].as_str().unwrap_or_default().chars().rev().take(6).collect();
    let clean = |s: &str| s.chars().filter(char::is_ascii_alphanumeric).collect::<String>();
    doc["contact"] = json!({
        "email": format!("{}.{}@example.invalid", clean(&first), clean(&last)),
        "phone": format!("+32470{digits}"),
        "language": language,
    });
    doc
}

/// Starts the National Register sandbox on `listener`.
pub fn serve(listener: TcpListener) -> std::io::Result<SandboxServer> {
    let register = Arc::new(Register::generate());
    sandbox::serve(listener, move |req| {
        let register = register.clone();
        async move { register.answer(&req) }
    })
}
