//! Source adapters of Passerelle: one module per source behind the gateway.
//!
//! Each source module describes its services (the [`catalogue`] the gateway compiles its route
//! table from) and ships a *sandbox*: a real HTTP server speaking the source's protocol with
//! deterministic synthetic data, used by `passerelle demo`, by the tests and by the test phase
//! of a convention.
//!
//! The crate holds the six sources of DOMAIN.md §4: the DIV vehicle register (SOAP 1.1/XML,
//! by plate or VIN), Sigedis DB2P (JSON, by NISS), the Flemish association register (JSON, by
//! vCode or enterprise number, with its public subset), the Flemish account-number and
//! contact-data sources (JSON, by NISS and public service) and the National Register person
//! search for local registration officers (JSON, by NISS, or by name and birth date).

pub mod accounts;
pub mod associations;
pub mod cadastre;
pub mod contacts;
pub mod describe;
pub mod div;
pub mod doc;
pub mod example;
pub mod json_text;
pub mod layout;
pub mod registered;
pub mod rn;
pub mod sandbox;
pub mod sigedis;
pub mod stream;
pub mod synthetic;
pub mod xml;
pub mod xsd;

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
    /// The imposed layout of request and answer (JSON services).
    pub layout: Option<layout::LayoutDef>,
    /// The imposed layout of request and answer (SOAP services).
    pub soap: Option<xml::SoapLayout>,
}

impl ServiceDef {
    /// Every grantable field of the service's answer, each once.
    pub fn fields(&self) -> Vec<&'static str> {
        let mut v: Vec<&'static str> = match (&self.layout, &self.soap) {
            (Some(l), _) => l.fields.iter().map(|(f, _)| *f).collect(),
            (None, Some(s)) => s.fields(),
            (None, None) => Vec::new(),
        };
        v.sort_unstable();
        v.dedup();
        v
    }
}

/// Every service the gateway knows how to expose.
pub fn catalogue() -> Vec<ServiceDef> {
    vec![
        div::vehicle_service(),
        sigedis::pensions_service(),
        associations::association_service(),
        accounts::iban_service(),
        contacts::contact_service(),
        rn::person_service(),
        rn::search_service(),
    ]
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
            let mut a: Vec<&str> = declared.iter().map(String::as_str).collect();
            a.sort_unstable();
            assert_eq!(a, service.fields(), "{}", service.id);
            if let Some(layout) = service.layout {
                super::layout::Layout::new(layout).unwrap();
            }
        }
    }
}
