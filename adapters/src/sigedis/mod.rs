//! Sigedis DB2P: supplementary pensions, JSON, looked up by NISS.
//!
//! Data per pension plan: organiser (enterprise number), pension institution, plan type,
//! acquired reserves, acquired benefits, situation date (DOMAIN.md §4).

pub mod sandbox;

use http::Method;
use policies::ids::IdKind;

use crate::layout::LayoutDef;
use crate::{Protocol, ServiceDef, SubjectKind};

/// `GET /sigedis/pensions` with `X-Subject: <NISS>`.
pub fn pensions_service() -> ServiceDef {
    ServiceDef {
        id: "sigedis.pensions",
        source: "sigedis",
        method: Method::GET,
        path: "/sigedis/pensions",
        upstream_path: "/db2p/pensions",
        subject: SubjectKind::Niss,
        protocol: Protocol::Json,
        layout: Some(LayoutDef {
            request_schema: None,
            response_schema: include_str!("../../layouts/sigedis.pensions.response.schema.json"),
            always: &["/niss"],
            fields: &[
                ("organiser", "/plans/*/organiser"),
                ("institution", "/plans/*/institution"),
                ("planType", "/plans/*/planType"),
                ("acquiredReserves", "/plans/*/acquiredReserves"),
                ("acquiredBenefits", "/plans/*/acquiredBenefits"),
                ("situationDate", "/plans/*/situationDate"),
            ],
            subjects: &[],
            identifiers: &[
                ("/niss", IdKind::Niss),
                ("/plans/*/organiser", IdKind::Kbo),
                ("/plans/*/institution", IdKind::Kbo),
            ],
            fallback: None,
        }),
        soap: None,
    }
}
