//! Step 3 — route: path → service, from a table compiled when the gateway starts. Stands
//! before the envelope because the service decides which headers are required and in which
//! dialect (problem+json or SOAP Fault) refusals are written.
//!
//! Matching is exact on the path: no normalisation, no percent-decoding, no trailing-slash
//! folding, so `..`, `%2e` or `//` tricks simply find no service.

use std::collections::HashMap;

use adapters::{Protocol, ServiceDef, SubjectKind};
use http::{HeaderValue, Method, Uri};

use crate::error::{Code, Dialect, Refusal};

/// A service the data plane exposes, with everything the request path needs precomputed.
#[derive(Debug)]
pub struct Route {
    pub service: ServiceDef,
    /// The production side, built once.
    pub upstream: Upstream,
    /// The test side (sandbox), if the source has one.
    pub test_upstream: Option<Upstream>,
    /// Index of the upstream source in the forwarder's table.
    pub source: usize,
    /// The service's imposed JSON layout, compiled once (the SOAP layout needs no compiling:
    /// it is `service.soap`).
    pub layout: Option<adapters::layout::Layout>,
    /// A registered source's generated sandbox, its test side: the example answer and its
    /// content type, answered without any network call.
    pub sandbox: Option<(bytes::Bytes, http::HeaderValue)>,
}

/// Where a route's calls go: the full URI and its `Host` header, both built once.
#[derive(Debug)]
pub struct Upstream {
    pub uri: Uri,
    /// The host, and the port where it is not the scheme's default: what hyper's client would
    /// otherwise format anew for every call.
    pub host: HeaderValue,
}

impl Upstream {
    /// The upstream at `uri`, which must name a host (the callers have checked it is http(s)).
    pub fn new(uri: Uri) -> Result<Self, String> {
        let host = uri.host().ok_or_else(|| format!("{uri} names no host"))?;
        let default =
            matches!((uri.scheme_str(), uri.port_u16()), (Some("http"), Some(80)) | (Some("https"), Some(443)));
        let text = match uri.port_u16() {
            Some(port) if !default => format!("{host}:{port}"),
            _ => host.to_owned(),
        };
        let host = HeaderValue::from_str(&text).map_err(|_| format!("{uri}: the host is not a header value"))?;
        Ok(Upstream { uri, host })
    }
}

impl Route {
    pub fn dialect(&self) -> Dialect {
        match self.service.protocol {
            Protocol::Json => Dialect::Json,
            Protocol::Soap => Dialect::Soap,
        }
    }

    pub fn subject(&self) -> SubjectKind {
        self.service.subject
    }

    pub fn method(&self) -> &Method {
        &self.service.method
    }
}

#[derive(Debug, Default)]
pub struct Table {
    by_path: HashMap<&'static str, Route>,
}

impl Table {
    pub fn new(routes: Vec<Route>) -> Self {
        Table { by_path: routes.into_iter().map(|r| (r.service.path, r)).collect() }
    }

    /// The route of `method path`. A refusal for a known path carries its route, so that the
    /// refusal is answered in the service's dialect (a SOAP Fault for an XML service).
    pub fn lookup(&self, method: &Method, path: &str) -> Result<&Route, (Refusal, Option<&Route>)> {
        let route = self
            .by_path
            .get(path)
            .ok_or_else(|| (Refusal::new(Code::ServiceUnknown, "no service is published at this path"), None))?;
        if route.method() != method {
            let allow = match *route.method() {
                Method::POST => "POST",
                Method::PUT => "PUT",
                Method::DELETE => "DELETE",
                _ => "GET",
            };
            return Err((
                Refusal::method_not_allowed(format!("this service is called with {allow}"), allow),
                Some(route),
            ));
        }
        Ok(route)
    }

    pub fn len(&self) -> usize {
        self.by_path.len()
    }

    pub fn is_empty(&self) -> bool {
        self.by_path.is_empty()
    }

    pub fn routes(&self) -> impl Iterator<Item = &Route> {
        self.by_path.values()
    }
}
