//! DIV vehicle register (*Banque-Carrefour des Véhicules*, FPS Mobility): SOAP 1.1 / XML,
//! looked up by plate or VIN, modelled on the federal "vehicle registration and technical data"
//! service. The imposed layout is published as `adapters/layouts/div.vehicle.xsd` (inside
//! `soap-envelope.xsd`); [`LAYOUT`] is the same layout as the gateway checks it.

pub mod sandbox;

use http::Method;
use policies::ids::{Kbo, Niss, Plate, Vin};

use crate::layout::SubjectType;
use crate::xml::{Kind, Node, SoapLayout, Text};
use crate::{Protocol, ServiceDef, SubjectKind};

/// Target namespace of the DIV layout.
pub const NS: &str = "urn:be:passerelle:div:vehicle:v1";

const PLATE: Text = Text::Id("Plate", |s| Plate::parse(s).is_ok());
const VIN: Text = Text::Id("Vin", |s| Vin::parse(s).is_ok());
const NISS: Text = Text::Id("Niss", |s| Niss::parse(s).is_ok());
const KBO: Text = Text::Id("EnterpriseNumber", |s| Kbo::parse(s).is_ok());
const POSTAL: Text = Text::Id("PostalCode", |s| s.len() == 4 && s.bytes().all(|b| b.is_ascii_digit()));
const COUNTRY: Text = Text::Id("Country", |s| s.len() == 2 && s.bytes().all(|b| b.is_ascii_uppercase()));
const TEXT64: Text = Text::Str { min: 1, max: 64 };
const TEXT128: Text = Text::Str { min: 1, max: 128 };
/// Fuels as the register codes them.
pub const FUELS: &[&str] = &["petrol", "diesel", "electric", "hybrid", "lpg", "cng", "hydrogen"];

const LOOKUP: &[Node] = &[Node::one("Plate", Kind::Text(PLATE)), Node::one("Vin", Kind::Text(VIN))];

const HOLDER_ID: &[Node] = &[
    Node::one("Niss", Kind::Text(NISS)).subject(SubjectType::Person),
    Node::one("EnterpriseNumber", Kind::Text(KBO)).subject(SubjectType::Organisation),
];

const ADDRESS: &[Node] = &[
    Node::one("Street", Kind::Text(TEXT128)),
    Node::one("Number", Kind::Text(Text::Str { min: 1, max: 16 })),
    Node::one("PostalCode", Kind::Text(POSTAL)),
    Node::one("Municipality", Kind::Text(TEXT64)),
    Node::one("Country", Kind::Text(COUNTRY)),
];

const HOLDER: &[Node] = &[
    Node::opt("Id", Kind::Choice(HOLDER_ID)).field("holderId"),
    Node::opt("Name", Kind::Text(TEXT128)).field("holderName"),
    Node::opt("Address", Kind::Seq(ADDRESS)).field("holderAddress"),
];

const INSURER: &[Node] = &[Node::one("EnterpriseNumber", Kind::Text(KBO)), Node::one("Name", Kind::Text(TEXT128))];

const VEHICLE: &[Node] = &[
    Node::opt("Plate", Kind::Text(PLATE)).field("plate"),
    Node::opt("Vin", Kind::Text(VIN)).field("vin"),
    Node::opt("Make", Kind::Text(TEXT64)).field("make"),
    Node::opt("Model", Kind::Text(TEXT64)).field("model"),
    Node::opt("Fuel", Kind::Text(Text::Enum(FUELS))).field("fuel"),
    Node::opt("FirstRegistrationDate", Kind::Text(Text::Date)).field("firstRegistrationDate"),
    Node::opt("RegistrationDate", Kind::Text(Text::Date)).field("registrationDate"),
    Node::opt("Holder", Kind::Seq(HOLDER)),
    Node::opt("Insurer", Kind::Seq(INSURER)).field("insurer"),
];

/// The imposed layout of `div.vehicle`.
pub const LAYOUT: SoapLayout = SoapLayout {
    ns: NS,
    request: Node::one("GetVehicleRequest", Kind::Choice(LOOKUP)),
    response: Node::one("GetVehicleResponse", Kind::Seq(&[Node::one("Vehicle", Kind::Seq(VEHICLE))])),
};

/// The published XSD of the payloads, and the SOAP 1.1 envelope schema that imports it.
pub const XSD: &str = include_str!("../../layouts/div.vehicle.xsd");
pub const ENVELOPE_XSD: &str = include_str!("../../layouts/soap-envelope.xsd");

/// `POST /div/vehicle` with a SOAP 1.1 `GetVehicleRequest` (plate or VIN) in the body.
pub fn vehicle_service() -> ServiceDef {
    ServiceDef {
        id: "div.vehicle",
        source: "div",
        method: Method::POST,
        path: "/div/vehicle",
        upstream_path: "/soap/VehicleRegistrationService",
        subject: SubjectKind::None,
        protocol: Protocol::Soap,
        layout: None,
        soap: Some(LAYOUT),
    }
}

/// A SOAP request for a plate (what callers send).
pub fn request_by_plate(plate: &str) -> String {
    crate::xml::envelope(&crate::xml::Element::new(NS, "GetVehicleRequest").leaf("Plate", plate))
}

/// A SOAP request for a VIN.
pub fn request_by_vin(vin: &str) -> String {
    crate::xml::envelope(&crate::xml::Element::new(NS, "GetVehicleRequest").leaf("Vin", vin))
}
