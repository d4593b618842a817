//! Source adapters of Passerelle: one module per source behind the gateway.
//!
//! Each source module describes its services (the [`catalogue`] the gateway compiles its route
//! table from) and ships a *sandbox*: a real HTTP server speaking the source's protocol with
//! deterministic synthetic data, used by `passerelle demo`, by the tests and by the test phase
//! of a convention.
//!
//! Today the crate holds the Sigedis DB2P source (JSON, by NISS), the Flemish association
//! register (JSON, by vCode or enterprise number) and the National Register person search for
//! local registration officers (JSON, by NISS or BIS). The imposed layouts, the request/response
//! DIV (SOAP/XML) and the Flemish account-number and contact-data sources are still to come.

pub mod associations;
pub mod layout;
pub mod rn;
pub mod sandbox;
pub mod sigedis;
pub mod synthetic;

use http::Method;

/// How a source speaks; decides how requests are checked and how refusals are rendered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Protocol {
    /// JSON over HTTP; refusals as `application/problem+json`.
    Json,
    /// SOAP 1.1 / XML; refusals as SOAP Faults.
    Soap,
}

/// What the `X-Subject` header of a service must hold.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SubjectKind {
    /// The service is not about one data subject; `X-Subject` must be absent.
    None,
    /// A national or BIS number.
    Niss,
    /// An enterprise number.
    Kbo,
    /// An association: its vCode or its enterprise number.
    Association,
}

/// A web service of a source, as exposed by the gateway.
#[derive(Debug, Clone)]
pub struct ServiceDef {
    /// Stable service id, `<source>.<service>`; policies grant access to it.
    pub id: &'static str,
    /// Name of the source; the gateway's `[sources.<name>]` config says where it is.
    pub source: &'static str,
    pub method: Method,
    /// Path on the gateway's data plane.
    pub path: &'static str,
    /// Path on the upstream source.
    pub upstream_path: &'static str,
    pub subject: SubjectKind,
    pub protocol: Protocol,
    /// The imposed layout of the answer (JSON services).
    pub layout: Option<layout::LayoutDef>,
}

/// Every service the gateway knows how to expose.
pub fn catalogue() -> Vec<ServiceDef> {
    vec![sigedis::pensions_service(), associations::association_service(), rn::person_service()]
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    /// Every field the policy bundles declare for a service has a place in the adapter's layout,
    /// and every place names a declared field: minimisation can neither miss nor invent one.
    #[test]
    fn layouts_cover_exactly_the_fields_of_the_bundles() {
        let policy = policies::bundle::load_texts(policies::seed::BUNDLES.iter().copied()).unwrap();
        for service in super::catalogue() {
            let declared = &policy.services.iter().find(|s| s.id == service.id).unwrap().fields;
            let layout = service.layout.unwrap();
            let mapped: Vec<&str> = layout.fields.iter().map(|(f, _)| *f).collect();
            let mut a: Vec<&str> = declared.iter().map(String::as_str).collect();
            let mut b = mapped.clone();
            a.sort_unstable();
            b.sort_unstable();
            assert_eq!(a, b, "{}", service.id);
            super::layout::Layout::new(layout).unwrap();
        }
    }
}
