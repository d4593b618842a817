//! The DIV sandbox: a SOAP 1.1 vehicle register with a deterministic synthetic fleet. It reads
//! requests with the same layout the gateway enforces and answers complete vehicles; the
//! gateway reduces them to what the caller's convention grants.

use std::collections::HashMap;
use std::sync::Arc;

use http::StatusCode;
use policies::ids::{Kbo, Niss, Plate, Vin};
use tokio::net::TcpListener;

use super::{FUELS, LAYOUT, NS};
use crate::sandbox::{self, SandboxRequest, SandboxResponse, SandboxServer};
use crate::synthetic::{Rng, people};
use crate::xml::{self, Element};

pub const SEED: u64 = 0xD1F0_CA25;
/// How many vehicles the register holds.
pub const FLEET: usize = 5_000;

const MAKES: &[(&str, &[&str])] = &[
    ("Volkswagen", &["Golf", "Polo", "ID.3"]),
    ("Renault", &["Clio", "Megane", "Zoe"]),
    ("Peugeot", &["208", "308", "3008"]),
    ("BMW", &["118i", "320d", "iX1"]),
    ("Toyota", &["Yaris", "Corolla", "RAV4"]),
    ("Skoda", &["Octavia", "Fabia", "Enyaq"]),
];
const FIRST: &[&str] = &["Jan", "Marie", "Luc", "Sofie", "Mohamed", "Els", "Arnaud", "Julie"];
const LAST: &[&str] = &["Peeters", "Janssens", "Dubois", "Lambert", "Claes", "Wouters", "Dupont"];
const COMPANIES: &[&str] = &["Fleet Services", "Transport Peeters", "Bouw Claes", "Taxi Centrum"];
const INSURERS: &[&str] = &["Assurances Atlas", "Verzekeringen Noord", "Mutua Auto", "Garantia"];
const PLACES: &[(&str, &str)] =
    &[("1000", "Brussel"), ("9000", "Gent"), ("4000", "Liège"), ("2000", "Antwerpen"), ("8000", "Brugge")];
const STREETS: &[&str] = &["Kerkstraat", "Rue de la Station", "Molenweg", "Stationsplein", "Rue Haute"];

/// One registered vehicle.
#[derive(Debug, Clone)]
pub struct Vehicle {
    pub plate: Plate,
    pub vin: Vin,
    /// The holder: a person or an organisation.
    pub holder: Holder,
    pub doc: Element,
    /// Its holders through time (`div.history`, a registered service: `layouts/div.history.xsd`).
    pub history: Element,
}

/// The namespace of the `div.history` layout (`adapters/layouts/div.history.xsd`).
pub const HISTORY_NS: &str = "urn:be:passerelle:div:history:v1";
/// Where the sandbox answers `div.history`.
pub const HISTORY_PATH: &str = "/soap/VehicleHistoryService";
/// The published XSD of `div.history`: DIV registers it through the control plane.
pub const HISTORY_XSD: &str = include_str!("../../layouts/div.history.xsd");

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Holder {
    Person(Niss),
    Organisation(Kbo),
}

#[derive(Debug)]
pub struct Register {
    vehicles: Vec<Vehicle>,
    by_plate: HashMap<Plate, usize>,
    by_vin: HashMap<Vin, usize>,
}

impl Register {
    pub fn generate() -> Self {
        let mut rng = Rng::new(SEED);
        let persons = people(SEED ^ 0x5A5A, FLEET);
        let insurers: Vec<(Kbo, &str)> = INSURERS.iter().map(|n| (rng.kbo(), *n)).collect();
        let mut vehicles = Vec::with_capacity(FLEET);
        let mut by_plate = HashMap::with_capacity(FLEET);
        let mut by_vin = HashMap::with_capacity(FLEET);
        for person in persons {
            let (plate, vin) = (rng.plate(), rng.vin());
            if by_plate.contains_key(&plate) || by_vin.contains_key(&vin) {
                continue;
            }
            let (make, models) = MAKES[rng.range(0, MAKES.len() as u64) as usize];
            let model = rng.pick(models);
            let first_year = rng.range(2010, 2026);
            let first = format!("{first_year}-{:02}-{:02}", rng.range(1, 13), rng.range(1, 29));
            let reg_year = rng.range(first_year, 2027);
            let registered = format!("{reg_year}-{:02}-{:02}", rng.range(1, 13), rng.range(1, 29));
            let registered = registered.max(first.clone());
            let (holder, id, name) = if rng.range(0, 5) == 0 {
                let k = rng.kbo();
                let mut d = [0u8; 10];
                let id = Element::new(NS, "Id").leaf("EnterpriseNumber", k.digits(&mut d));
                (Holder::Organisation(k), id, format!("{} BV", rng.pick(COMPANIES)))
            } else {
                let mut d = [0u8; 11];
                let id = Element::new(NS, "Id").leaf("Niss", person.digits(&mut d));
                (Holder::Person(person), id, format!("{} {}", rng.pick(FIRST), rng.pick(LAST)))
            };
            let (postal, town) = PLACES[rng.range(0, PLACES.len() as u64) as usize];
            let address = Element::new(NS, "Address")
                .leaf("Street", rng.pick(STREETS))
                .leaf("Number", &rng.range(1, 250).to_string())
                .leaf("PostalCode", postal)
                .leaf("Municipality", town)
                .leaf("Country", "BE");
            let (ik, iname) = insurers[rng.range(0, insurers.len() as u64) as usize];
            let mut d = [0u8; 10];
            let insurer = Element::new(NS, "Insurer").leaf("EnterpriseNumber", ik.digits(&mut d)).leaf("Name", iname);
            let doc = Element::new(NS, "GetVehicleResponse").child(
                Element::new(NS, "Vehicle")
                    .leaf("Plate", plate.as_str())
                    .leaf("Vin", vin.as_str())
                    .leaf("Make", make)
                    .leaf("Model", model)
                    .leaf("Fuel", rng.pick(FUELS))
                    .leaf("FirstRegistrationDate", &first)
                    .leaf("RegistrationDate", &registered)
                    .child(Element::new(NS, "Holder").child(id).leaf("Name", &name).child(address))
                    .child(insurer),
            );
            // The holder before the current one, from the first registration to the current.
            let mut history = Element::new(HISTORY_NS, "GetVehicleHistoryResponse").leaf("Plate", plate.as_str());
            if registered > first {
                // Its own generator: the fleet stays what it was before histories were added.
                let mut rng = Rng::new(SEED ^ 0x4157_0000 ^ vehicles.len() as u64);
                let previous = rng.niss();
                let mut d = [0u8; 11];
                let id = Element::new(HISTORY_NS, "Id").leaf("Niss", previous.digits(&mut d));
                let name = format!("{} {}", rng.pick(FIRST), rng.pick(LAST));
                history = history.child(
                    Element::new(HISTORY_NS, "Entry")
                        .leaf("From", &first)
                        .leaf("Until", &registered)
                        .child(Element::new(HISTORY_NS, "Holder").child(id).leaf("Name", &name)),
                );
            }
            let mut current_id = doc.children[0].find("Holder").and_then(|h| h.find("Id")).cloned().unwrap_or_default();
            rename_ns(&mut current_id, HISTORY_NS);
            history = history.child(
                Element::new(HISTORY_NS, "Entry")
                    .leaf("From", &registered)
                    .child(Element::new(HISTORY_NS, "Holder").child(current_id).leaf("Name", &name)),
            );
            by_plate.insert(plate, vehicles.len());
            by_vin.insert(vin, vehicles.len());
            vehicles.push(Vehicle { plate, vin, holder, doc, history });
        }
        Register { vehicles, by_plate, by_vin }
    }

    /// The fleet, in a stable order.
    pub fn vehicles(&self) -> &[Vehicle] {
        &self.vehicles
    }

    /// The answer for a plate or VIN, as the payload element.
    pub fn lookup(&self, request: &Element) -> Option<&Vehicle> {
        let key = request.children.first()?;
        let i = match key.name.as_str() {
            "Plate" => self.by_plate.get(&Plate::parse(&key.text).ok()?),
            "Vin" => self.by_vin.get(&Vin::parse(&key.text).ok()?),
            _ => None,
        }?;
        self.vehicles.get(*i)
    }

    pub fn answer(&self, req: &SandboxRequest) -> SandboxResponse {
        if req.uri().path() == HISTORY_PATH {
            return self.history(req);
        }
        if req.uri().path() != super::vehicle_service().upstream_path {
            return sandbox::text(StatusCode::NOT_FOUND, "unknown path");
        }
        let request = match LAYOUT.check_request(req.body()) {
            Ok(r) => r,
            Err(why) => return sandbox::xml(StatusCode::INTERNAL_SERVER_ERROR, xml::fault("Client", &why)),
        };
        match self.lookup(&request) {
            Some(v) => sandbox::xml(StatusCode::OK, xml::envelope(&v.doc)),
            // A 404 with a fault: the gateway tells "no such vehicle" apart from a failure.
            None => sandbox::xml(StatusCode::NOT_FOUND, xml::fault("Client", "no vehicle with this plate or VIN")),
        }
    }
}

impl Register {
    /// `div.history`: the request is read as a SOAP envelope holding a
    /// `GetVehicleHistoryRequest` with a plate or a VIN.
    fn history(&self, req: &SandboxRequest) -> SandboxResponse {
        let request = match xml::open_envelope(req.body(), xml::LIMITS) {
            Ok(r) if r.ns == HISTORY_NS && r.name == "GetVehicleHistoryRequest" => r,
            Ok(_) => {
                return sandbox::xml(StatusCode::INTERNAL_SERVER_ERROR, xml::fault("Client", "not a history request"));
            }
            Err(why) => return sandbox::xml(StatusCode::INTERNAL_SERVER_ERROR, xml::fault("Client", &why)),
        };
        match self.lookup(&request) {
            Some(v) => sandbox::xml(StatusCode::OK, xml::envelope(&v.history)),
            None => sandbox::xml(StatusCode::NOT_FOUND, xml::fault("Client", "no vehicle with this plate or VIN")),
        }
    }
}

fn rename_ns(el: &mut Element, ns: &str) {
    ns.clone_into(&mut el.ns);
    el.children.iter_mut().for_each(|c| rename_ns(c, ns));
}

/// A SOAP `div.history` request for a plate (what callers send).
pub fn history_by_plate(plate: &str) -> String {
    xml::envelope(&Element::new(HISTORY_NS, "GetVehicleHistoryRequest").leaf("Plate", plate))
}

/// What DIV posts to `POST /services` to register `div.history` with the XSD `xsd` (the
/// published [`HISTORY_XSD`], read from its file by the caller).
pub fn history_registration(xsd: &str) -> serde_json::Value {
    serde_json::json!({
        "id": "div.history", "source": "div",
        "exposure": {
            "method": "POST", "path": "/div/history", "upstream_path": HISTORY_PATH,
            "dialect": "soap",
            "layout": { "xsd": xsd, "request_element": "GetVehicleHistoryRequest",
                        "response_element": "GetVehicleHistoryResponse" },
            "catalogue": [
                { "path": "Plate" },
                { "field": "periods", "path": "Entry/From" },
                { "field": "periods", "path": "Entry/Until" },
                { "field": "holders", "path": "Entry/Holder" },
                { "path": "Entry/Holder/Id/Niss", "subject": "person" },
                { "path": "Entry/Holder/Id/EnterpriseNumber", "subject": "organisation" }
            ]
        }
    })
}

/// Starts the DIV sandbox on `listener`.
pub fn serve(listener: TcpListener) -> std::io::Result<SandboxServer> {
    let register = Arc::new(Register::generate());
    sandbox::serve(listener, move |req| {
        let register = register.clone();
        async move { register.answer(&req) }
    })
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn every_vehicle_follows_the_layout() {
        let r = Register::generate();
        assert!(r.vehicles().len() > FLEET * 9 / 10);
        for v in r.vehicles() {
            let doc = xml::envelope(&v.doc);
            LAYOUT.check_response(doc.as_bytes()).unwrap();
        }
        let v = &r.vehicles()[0];
        let by_vin = LAYOUT.check_request(super::super::request_by_vin(v.vin.as_str()).as_bytes()).unwrap();
        assert_eq!(r.lookup(&by_vin).unwrap().plate, v.plate);
    }

    /// The histories follow `div.history.xsd` as the gateway compiles it for a registration.
    #[test]
    fn every_history_follows_its_registered_layout() {
        let schema = crate::xsd::compile(HISTORY_XSD).unwrap();
        let resp = schema.elements["GetVehicleHistoryResponse"].freeze(&|_| (None, None));
        let layout = xml::SoapLayout { ns: HISTORY_NS, request: resp, response: resp };
        let r = Register::generate();
        let mut previous = 0;
        for v in r.vehicles() {
            let doc = xml::envelope(&v.history);
            layout.check_response(doc.as_bytes()).unwrap();
            previous += usize::from(v.history.children.len() > 2);
        }
        assert!(previous > r.vehicles().len() / 2, "most vehicles had a holder before: {previous}");
    }
}
