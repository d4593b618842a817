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

/// Where a route's calls go, everything a call needs built once: the full URI, the request
/// target and `Host` header hyper's connection sends, the address to connect to, and the key
/// of the connections kept for it (see `pool`).
#[derive(Debug)]
pub struct Upstream {
    pub uri: Uri,
    /// The host, and the port where it is not the scheme's default.
    pub host: HeaderValue,
    /// The request target in origin form (path and query), as HTTP/1.1 sends it.
    pub target: Uri,
    /// The host to connect to and to name in TLS (an IPv6 address without its brackets).
    pub addr_host: Box<str>,
    pub port: u16,
    /// `https://`.
    pub tls: bool,
    /// Scheme, host and port, in lower case: upstreams with the same key share connections.
    pub key: std::sync::Arc<str>,
}

impl Upstream {
    /// The upstream at `uri`, which must name a host (the callers have checked it is http(s)).
    pub fn new(uri: Uri) -> Result<Self, String> {
        let host = uri.host().ok_or_else(|| format!("{uri} names no host"))?;
        let tls = match uri.scheme_str() {
            Some("http") => false,
            Some("https") => true,
            _ => return Err(format!("{uri} is not an http:// or https:// URL")),
        };
        let default_port = if tls { 443 } else { 80 };
        let port = uri.port_u16().unwrap_or(default_port);
        let text = if port == default_port { host.to_owned() } else { format!("{host}:{port}") };
        let host_header = HeaderValue::from_str(&text).map_err(|_| format!("{uri}: the host is not a header value"))?;
        let target: Uri = uri
            .path_and_query()
            .map_or("/", |p| p.as_str())
            .parse()
            .map_err(|_| format!("{uri}: the path is not a request target"))?;
        let addr_host = host.trim_start_matches('[').trim_end_matches(']').into();
        let key = format!("{}://{}:{port}", if tls { "https" } else { "http" }, host.to_ascii_lowercase()).into();
        Ok(Upstream { uri, host: host_header, target, addr_host, port, tls, key })
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

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn an_upstream_knows_its_address_target_host_and_pool_key() {
        let u = Upstream::new("http://Register.example:8080/v1/verenigingen?x=1".parse().unwrap()).unwrap();
        assert_eq!((u.tls, &*u.addr_host, u.port), (false, "Register.example", 8080));
        assert_eq!(u.target.to_string(), "/v1/verenigingen?x=1");
        assert_eq!(u.host, "Register.example:8080");
        assert_eq!(&*u.key, "http://register.example:8080");

        let u = Upstream::new("https://[::1]/div".parse().unwrap()).unwrap();
        assert_eq!((u.tls, &*u.addr_host, u.port), (true, "::1", 443));
        assert_eq!(u.host, "[::1]");
        assert_eq!(&*u.key, "https://[::1]:443");

        // The default port named or not: one key, one `Host`.
        let a = Upstream::new("http://h:80/a".parse().unwrap()).unwrap();
        let b = Upstream::new("http://h/b".parse().unwrap()).unwrap();
        assert_eq!((a.key, a.host), (b.key, b.host));
        assert_eq!(Upstream::new("http://h".parse().unwrap()).unwrap().target.to_string(), "/");

        assert!(Upstream::new("ftp://h/x".parse().unwrap()).is_err());
        assert!(Upstream::new("/no/host".parse().unwrap()).is_err());
    }
}
