//! National Register / BIS register person search for local registration officers (LRA), by
//! NISS or by name and birth date: names, birth date and place, address, sex; and, by NISS,
//! the e-mail, phone and language the person gave to be contacted (seed 003: only with the
//! person's consent). Access is by the end user's role
//! (seed 003), which the policy checks through `X-End-User`.

pub mod sandbox;

use http::Method;
use policies::ids::IdKind;

use crate::layout::{LayoutDef, SubjectType};
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
            request_schema: None,
            response_schema: include_str!("../../layouts/rn.person.response.schema.json"),
            always: &["/niss"],
            fields: &[
                ("names", "/names"),
                ("birthDate", "/birthDate"),
                ("birthPlace", "/birthPlace"),
                ("address", "/address"),
                ("sex", "/sex"),
                ("email", "/contact/email"),
                ("phone", "/contact/phone"),
                ("language", "/contact/language"),
            ],
            subjects: &[],
            identifiers: &[("/niss", IdKind::Niss)],
            fallback: None,
        }),
        soap: None,
    }
}

/// The fields of a person, and where they sit in a search answer.
const SEARCH_FIELDS: &[(&str, &str)] = &[
    ("names", "/persons/*/names"),
    ("birthDate", "/persons/*/birthDate"),
    ("birthPlace", "/persons/*/birthPlace"),
    ("address", "/persons/*/address"),
    ("sex", "/persons/*/sex"),
];

/// `POST /rn/persons/search` with `{"lastName", "firstName"?, "birthDate"}` and
/// `X-End-User: <officer>`; the persons found are the data subjects of the call.
pub fn search_service() -> ServiceDef {
    ServiceDef {
        id: "rn.search",
        source: "rn",
        method: Method::POST,
        path: "/rn/persons/search",
        upstream_path: "/v1/persons/search",
        subject: SubjectKind::None,
        protocol: Protocol::Json,
        layout: Some(LayoutDef {
            request_schema: Some(include_str!("../../layouts/rn.search.request.schema.json")),
            response_schema: include_str!("../../layouts/rn.search.response.schema.json"),
            always: &["/persons/*/niss"],
            fields: SEARCH_FIELDS,
            subjects: &[("/persons/*/niss", SubjectType::Person)],
            identifiers: &[("/persons/*/niss", IdKind::Niss)],
            fallback: None,
        }),
        soap: None,
    }
}
