//! The Flemish contact-data source (decree of 18 July 2008, art. 7–7/6): JSON, looked up by
//! NISS and public service: e-mail, phone, mobile, the preferred channel, last validation.
//! Default contact data and data linked to particular services, as for account numbers;
//! consulted only by Flemish instances, to interact with the citizen (art. 7/4).

use http::Method;
use policies::ids::IdKind;

use crate::layout::{Fallback, LayoutDef};
use crate::{Protocol, ServiceDef, SubjectKind};

/// `POST /contacts/contact` with `X-Subject: <NISS>` and `{"publicService": "..."}`.
pub fn contact_service() -> ServiceDef {
    ServiceDef {
        id: "contacts.contact",
        source: "contacts",
        method: Method::POST,
        path: "/contacts/contact",
        upstream_path: "/v1/contactgegevens",
        subject: SubjectKind::Niss,
        protocol: Protocol::Json,
        layout: Some(LayoutDef {
            request_schema: Some(include_str!("../../layouts/contacts.contact.request.schema.json")),
            response_schema: include_str!("../../layouts/contacts.contact.response.schema.json"),
            always: &["/niss", "/publicService"],
            fields: &[
                ("email", "/service/email"),
                ("email", "/default/email"),
                ("phone", "/service/phone"),
                ("phone", "/default/phone"),
                ("mobile", "/service/mobile"),
                ("mobile", "/default/mobile"),
                ("preferred", "/service/preferred"),
                ("preferred", "/default/preferred"),
                ("lastValidation", "/lastValidation"),
            ],
            subjects: &[],
            identifiers: &[("/niss", IdKind::Niss)],
            fallback: Some(Fallback { service: "/publicService", linked: "/service", default: "/default" }),
        }),
        soap: None,
    }
}
