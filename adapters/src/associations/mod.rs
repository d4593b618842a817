//! Flemish association register (Verenigingsregister) — JSON, by vCode or enterprise number.
//!
//! Data: name, status (active/inactive), contact data, purpose, classifications,
//! umbrella/sections, representatives (NISS, name, contact, role), recognition, bank account,
//! enterprise number (DOMAIN.md §4).

pub mod sandbox;

use http::Method;

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
        }),
    }
}
