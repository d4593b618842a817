//! The Flemish account-number source (decree of 18 July 2008, art. 5–5/7): JSON, looked up by
//! NISS and the public service the payment is for. It holds the citizen's default account and
//! accounts linked to particular services; consulted only by Flemish instances, to pay a
//! granted benefit (art. 5/5), on the citizen's consent (art. 5/2).

pub mod sandbox;

use http::Method;
use policies::ids::IdKind;

use crate::layout::{Fallback, LayoutDef};
use crate::{Protocol, ServiceDef, SubjectKind};

/// Public services of the synthetic Flemish instances, as their codes appear in requests.
pub const PUBLIC_SERVICES: &[&str] =
    &["GROEIPAKKET", "STUDIETOELAGE", "PREMIE-RENOVATIE", "KMO-PORTEFEUILLE", "ZORGBUDGET", "JOBBONUS"];

/// `POST /accounts/iban` with `X-Subject: <NISS>` and `{"publicService": "..."}`.
pub fn iban_service() -> ServiceDef {
    ServiceDef {
        id: "accounts.iban",
        source: "accounts",
        method: Method::POST,
        path: "/accounts/iban",
        upstream_path: "/v1/rekeningnummers",
        subject: SubjectKind::Niss,
        protocol: Protocol::Json,
        layout: Some(LayoutDef {
            request_schema: Some(include_str!("../../layouts/accounts.iban.request.schema.json")),
            response_schema: include_str!("../../layouts/accounts.iban.response.schema.json"),
            always: &["/niss", "/publicService"],
            fields: &[
                ("serviceIban", "/serviceIban"),
                ("defaultIban", "/defaultIban"),
                ("lastValidation", "/lastValidation"),
            ],
            subjects: &[],
            identifiers: &[("/niss", IdKind::Niss), ("/serviceIban", IdKind::Iban), ("/defaultIban", IdKind::Iban)],
            fallback: Some(Fallback { service: "/publicService", linked: "/serviceIban", default: "/defaultIban" }),
        }),
        soap: None,
    }
}
