//! National Register / BIS register person search for local registration officers (LRA), by
//! NISS: names, birth date and place, address, sex. Access is by the end user's role
//! (seed 003), which the policy checks through `X-End-User`.

pub mod sandbox;

use http::Method;

use crate::layout::LayoutDef;
use crate::{Protocol, ServiceDef, SubjectKind};

/// `GET /rn/person` with `X-Subject: <NISS or BIS>` and `X-End-User: <officer>`.
pub fn person_service() -> ServiceDef {
    ServiceDef {
        id: "rn.person",
        source: "rn",
        method: Method::GET,
        path: "/rn/person",
        upstream_path: "/v1/persons",
        subject: SubjectKind::Niss,
        protocol: Protocol::Json,
        layout: Some(LayoutDef {
            response_schema: include_str!("../../layouts/rn.person.response.schema.json"),
            always: &["/niss"],
            fields: &[
                ("names", "/names"),
                ("birthDate", "/birthDate"),
                ("birthPlace", "/birthPlace"),
                ("address", "/address"),
                ("sex", "/sex"),
            ],
            subjects: &[],
        }),
    }
}
