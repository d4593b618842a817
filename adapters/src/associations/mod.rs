//! Flemish association register (Verenigingsregister) — JSON, by vCode or enterprise number.
//!
//! Data: name, status (active/inactive), contact data, purpose, classifications,
//! umbrella/sections, representatives (NISS, name, contact, role), recognition, bank account,
//! enterprise number (DOMAIN.md §4).

pub mod sandbox;

use http::Method;
use policies::ids::IdKind;

use crate::layout::{LayoutDef, SubjectType};
use crate::{Protocol, ServiceDef, SubjectKind};

/// `GET /associations/association` with `X-Subject: <vCode or enterprise number>`.
pub fn association_service() -> ServiceDef {
    ServiceDef {
        id: "associations.association",
        source: "associations",
        method: Method::GET,
        path: "/associations/association",
        upstream_path: "/v1/verenigingen",
        subject: SubjectKind::Association,
        protocol: Protocol::Json,
        layout: Some(LayoutDef {
            request_schema: None,
            response_schema: include_str!("../../layouts/associations.association.response.schema.json"),
            always: &[],
            fields: &[
                ("vCode", "/vCode"),
                ("name", "/name"),
                ("status", "/status"),
                ("contact", "/contact"),
                ("purpose", "/purpose"),
                ("classifications", "/classifications"),
                ("structure", "/structure"),
                ("representatives", "/representatives"),
                ("recognition", "/recognition"),
                ("bankAccount", "/bankAccount"),
                ("enterpriseNumber", "/enterpriseNumber"),
            ],
            subjects: &[
                ("/representatives/*/niss", SubjectType::Person),
                ("/enterpriseNumber", SubjectType::Organisation),
            ],
            identifiers: &[
                ("/vCode", IdKind::VCode),
                ("/structure/sections/*", IdKind::VCode),
                ("/representatives/*/niss", IdKind::Niss),
                ("/enterpriseNumber", IdKind::Kbo),
                ("/bankAccount", IdKind::Iban),
            ],
            fallback: None,
        }),
        soap: None,
    }
}

/// The public subset (art. 4/1 §2, items 1–6, 9, 11 and 12): names, status, contact data,
/// purpose, classifications, umbrella/sections, recognition, vCode, enterprise number.
pub const PUBLIC_FIELDS: &[&str] = &[
    "name",
    "status",
    "contact",
    "purpose",
    "classifications",
    "structure",
    "recognition",
    "vCode",
    "enterpriseNumber",
];

/// Whether an association (as the register answers it) may be shown to the public: only
/// active ones, and never a de facto association that asked not to be published.
pub fn is_public(doc: &crate::doc::Doc<'_>) -> bool {
    use crate::doc::Doc;
    let text = |k: &str| doc.get(k).and_then(Doc::as_str);
    text("status") == Some("active")
        && !(text("legalForm") == Some("de-facto") && doc.get("publicationOptOut") == Some(&Doc::Bool(true)))
}
