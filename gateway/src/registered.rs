//! The data plane of the services registered in the policy (`services[*].exposure`), built
//! from the policy in force and rebuilt whenever a version changes a registration — on every
//! replica, without restart, since every replica installs every version.
//!
//! [`check`] is what [`crate::policy::Changes::apply`] runs before a version may be committed:
//! each registration compiles ([`adapters::registered::compile`]: layouts, catalogue, the
//! generated sandbox's example), no path is taken twice, and each service's source can be
//! reached — a registered upstream whose URLs parse and whose TLS files load, or the
//! configuration's `[sources.<name>]` for a built-in source (a new service of DIV calls DIV
//! where DIV is).
//!
//! [`Plane::build`] turns the same registrations into routes and upstream connection pools.
//! The routes are consulted after the built-in table (a registered path never shadows a
//! built-in one: [`check`] refuses it). A registered plane has its own connection pools and
//! breakers; a rebuild starts them afresh, which a registration change is rare enough to afford.

use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use http::Uri;
use policies::model::{Policy, Service, Source as SourceModel};

use crate::config::{Config, SourceTls};
use crate::pipeline::forward::{Source, Upstreams};
use crate::pipeline::route::{Route, Table, Upstream};

/// The registered services' routes and their upstreams.
#[derive(Debug)]
pub struct Plane {
    pub table: Table,
    pub upstreams: Upstreams,
    /// The registrations it was built from, to skip rebuilding for a change elsewhere.
    pub key: String,
    /// Each registered SOAP service's XSD and each service's compiled registration, for the
    /// published descriptions (WSDL, OpenAPI).
    pub registered: Vec<adapters::registered::Registered>,
}

/// Where a registered service's source is reached, resolved.
struct Resolved {
    production: String,
    test: Option<TestSide>,
    timeout: Duration,
    max_response_bytes: usize,
    tls: Option<SourceTls>,
    breaker: crate::pipeline::breaker::Settings,
}

enum TestSide {
    Url(String),
    Sandbox,
}

const DEFAULT_TIMEOUT_MS: u64 = 5_000;
const DEFAULT_MAX_RESPONSE: u64 = 1 << 20;

fn resolve(cfg: &Config, source: &SourceModel) -> Result<Resolved, String> {
    if let Some(u) = &source.upstream {
        let tls = u.tls.as_ref().map(|t| SourceTls {
            ca: t.ca.clone().into(),
            cert: t.cert.clone().map(Into::into),
            key: t.key.clone().map(Into::into),
        });
        let test = match u.test.as_deref() {
            None => None,
            Some("sandbox") => Some(TestSide::Sandbox),
            Some(url) => Some(TestSide::Url(url.to_owned())),
        };
        let max = u.max_response_bytes.unwrap_or(DEFAULT_MAX_RESPONSE);
        if max == 0 || max > 64 << 20 {
            return Err(format!("source {}: max_response_bytes must be 1 to {} bytes", source.id, 64u64 << 20));
        }
        let timeout = u.timeout_ms.unwrap_or(DEFAULT_TIMEOUT_MS);
        if timeout == 0 || timeout > 120_000 {
            return Err(format!("source {}: timeout_ms must be 1 to 120000", source.id));
        }
        return Ok(Resolved {
            production: u.url.clone(),
            test,
            timeout: Duration::from_millis(timeout),
            max_response_bytes: max as usize,
            tls,
            breaker: crate::pipeline::breaker::Settings { failures: 5, open_for: Duration::from_secs(10) },
        });
    }
    let Some(sc) = cfg.sources.get(&source.id) else {
        return Err(format!(
            "source {} has no upstream: register one with the source (url, test side) before its services",
            source.id
        ));
    };
    Ok(Resolved {
        production: sc.upstream.clone(),
        test: sc.test_upstream.clone().map(TestSide::Url),
        timeout: Duration::from_millis(sc.timeout_ms),
        max_response_bytes: sc.max_response_bytes,
        tls: sc.tls.clone(),
        breaker: crate::pipeline::breaker::Settings {
            failures: sc.breaker_failures,
            open_for: Duration::from_millis(sc.breaker_open_ms),
        },
    })
}

/// A full upstream URI; `allowed` decides the host of a registered upstream (`None`: a built-in
/// source's, from the configuration).
fn upstream(
    base: &str,
    path: &str,
    what: &str,
    allowed: Option<&crate::config::ControlConfig>,
) -> Result<Upstream, String> {
    let u: Uri = format!("{}{}", base.trim_end_matches('/'), path)
        .parse()
        .map_err(|e| format!("{what} {base:?} is not a URL ({e})"))?;
    let host = match (u.scheme_str(), u.host()) {
        (Some("http" | "https"), Some(h)) => h,
        _ => return Err(format!("{what} {base:?} is not an http:// or https:// URL with a host")),
    };
    if let Some(c) = allowed
        && !c.upstream_host_allowed(host)
    {
        return Err(format!(
            "{what}'s host {host} is not one the operator allows registered upstreams to name (control.upstream_hosts)"
        ));
    }
    Upstream::new(u)
}

fn registrations(policy: &Policy) -> impl Iterator<Item = &Service> {
    policy.services.iter().filter(|s| s.exposure.is_some())
}

/// The text the plane depends on: the registered services, their sources and every registered
/// upstream.
fn key(policy: &Policy) -> String {
    let services: Vec<&Service> = registrations(policy).collect();
    let sources: Vec<&SourceModel> =
        (policy.sources.iter()).filter(|s| s.upstream.is_some() || services.iter().any(|x| x.source == s.id)).collect();
    serde_json::to_string(&(services, sources)).unwrap_or_default()
}

/// Everything a plane is made of, checked and compiled, before any client is built or any
/// gauge set: what [`Changes`](crate::policy::Changes) checks a version against, and what the
/// plane is then built from.
#[derive(Debug)]
struct Parts {
    routes: Vec<Route>,
    sources: Vec<Source>,
    registered: Vec<adapters::registered::Registered>,
    key: String,
}

/// Checks every registration of `policy` as the data plane would use it (`passerelle policy
/// import` runs it on a stopped gateway's store).
pub fn check(cfg: &Config, policy: &Policy) -> Result<(), String> {
    parts(cfg, policy).map(|_| ())
}

/// Resolves, checks and compiles `policy`'s registrations: every source with a registered
/// upstream (used by a service or not) and every source a registered service calls is resolved
/// once, its base URLs checked (a registered one's host against `control.upstream_hosts`) and
/// its TLS files loaded once; every registered service is compiled and routed.
fn parts(cfg: &Config, policy: &Policy) -> Result<Parts, String> {
    adapters::registered::check_paths(&policy.services)?;
    let mut sources: Vec<(Source, Resolved, bool)> = Vec::new();
    let used = |s: &SourceModel| s.upstream.is_some() || registrations(policy).any(|x| x.source == s.id);
    for model in policy.sources.iter().filter(|s| used(s)) {
        let at = |e: String| format!("source {}: {e}", model.id);
        let r = resolve(cfg, model).map_err(at)?;
        let registered = model.upstream.is_some();
        let allowed = registered.then_some(&cfg.control);
        upstream(&r.production, "/", "the upstream", allowed).map_err(at)?;
        if let Some(TestSide::Url(u)) = &r.test {
            upstream(u, "/", "the test upstream", allowed).map_err(at)?;
        }
        let tls = (r.tls.as_ref().map(crate::tls::source_client_config).transpose())
            .map_err(|e| at(format!("the upstream's TLS settings: {e}")))?;
        let source = Source {
            name: model.id.clone(),
            timeout: r.timeout,
            max_response_bytes: r.max_response_bytes,
            breaker: r.breaker,
            tls,
        };
        sources.push((source, r, registered));
    }
    let mut routes = Vec::new();
    let mut registered = Vec::new();
    for service in registrations(policy) {
        let at = |e: String| format!("service {}: {e}", service.id);
        let compiled = adapters::registered::compile(service).map_err(at)?;
        let Some(source) = sources.iter().position(|(s, ..)| s.name == service.source) else {
            return Err(at(format!("unknown source {}", service.source)));
        };
        let (_, r, is_registered) = &sources[source];
        let def = &compiled.def;
        let allowed = is_registered.then_some(&cfg.control);
        let production = upstream(&r.production, def.upstream_path, "the upstream", allowed).map_err(at)?;
        let (test_upstream, sandbox) = match &r.test {
            None => (None, None),
            Some(TestSide::Url(u)) => {
                (Some(upstream(u, def.upstream_path, "the test upstream", allowed).map_err(at)?), None)
            }
            Some(TestSide::Sandbox) => (None, Some((compiled.example.clone(), content_type(def)))),
        };
        let layout = def.layout.map(adapters::layout::Layout::new).transpose().map_err(|e| at(e.to_string()))?;
        routes.push(Route { service: def.clone(), upstream: production, test_upstream, source, layout, sandbox });
        registered.push(compiled);
    }
    let sources = sources.into_iter().map(|(s, ..)| s).collect();
    Ok(Parts { routes, sources, registered, key: key(policy) })
}

impl Plane {
    /// The plane of checked parts: their connection pools made, their circuit gauges set.
    fn of(parts: Parts, metrics: &crate::metrics::Metrics) -> Self {
        Plane {
            table: Table::new(parts.routes),
            upstreams: Upstreams::new(parts.sources, metrics.circuit_open.clone()),
            key: parts.key,
            registered: parts.registered,
        }
    }
}

fn content_type(def: &adapters::ServiceDef) -> http::HeaderValue {
    match def.protocol {
        adapters::Protocol::Json => http::HeaderValue::from_static("application/json"),
        adapters::Protocol::Soap => http::HeaderValue::from_static("text/xml; charset=utf-8"),
    }
}

/// Keeps the registered plane in step with the policy: rebuilt on every installed version that
/// changes a registration (the same check let it in, so a failure here means the files it
/// names changed on disk since; the previous plane then stays, and the error is logged).
#[derive(Debug)]
pub struct Keeper {
    pub plane: arc_swap::ArcSwap<Plane>,
    /// The parts the last check compiled, which the install that follows it uses instead of
    /// compiling them again.
    checked: std::sync::Mutex<Option<Parts>>,
    cfg: Config,
    metrics: crate::metrics::Metrics,
}

impl Keeper {
    pub fn new(cfg: &Config, metrics: &crate::metrics::Metrics, policy: &Policy) -> anyhow::Result<Arc<Self>> {
        let parts = parts(cfg, policy)
            .map_err(|e| anyhow::anyhow!(e))
            .context("the registered services of the policy in force")?;
        Ok(Arc::new(Keeper {
            plane: arc_swap::ArcSwap::from_pointee(Plane::of(parts, metrics)),
            checked: std::sync::Mutex::new(None),
            cfg: cfg.clone(),
            metrics: metrics.clone(),
        }))
    }

    /// Rebuilds the plane for `policy` when its registrations differ from the plane's.
    pub fn install(&self, policy: &Policy) {
        let key = key(policy);
        if self.plane.load().key == key {
            return;
        }
        let checked = self.checked.lock().ok().and_then(|mut c| c.take()).filter(|p| p.key == key);
        match checked.map_or_else(|| parts(&self.cfg, policy), Ok) {
            Ok(p) => {
                let plane = Plane::of(p, &self.metrics);
                tracing::info!(services = plane.table.len(), "registered services in force");
                self.plane.store(Arc::new(plane));
            }
            Err(e) => tracing::error!(error = %e, "registered services not rebuilt; the previous ones stay"),
        }
    }

    /// The check [`crate::policy::Changes`] runs before committing a version.
    pub fn check(&self, policy: &Policy) -> Result<(), String> {
        if self.plane.load().key == key(policy) {
            return Ok(());
        }
        let p = parts(&self.cfg, policy)?;
        if let Ok(mut c) = self.checked.lock() {
            *c = Some(p);
        }
        Ok(())
    }
}

/// Which published description.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Description {
    Wsdl,
    OpenApi,
}

impl Plane {
    /// The registered service at this data-plane path, or with this id.
    pub fn find(&self, path_or_id: &str) -> Option<&adapters::registered::Registered> {
        self.registered.iter().find(|r| r.def.path == path_or_id || r.def.id == path_or_id)
    }

    /// The description of a registered service, with `base` (`https://host:port`) as the data
    /// plane's address: its body and content type, `None` when it has none of that kind.
    pub fn describe(&self, path_or_id: &str, kind: Description, base: &str) -> Option<(String, &'static str)> {
        let r = self.find(path_or_id)?;
        match kind {
            Description::Wsdl => adapters::describe::wsdl(r, base).map(|w| (w, "text/xml; charset=utf-8")),
            Description::OpenApi => adapters::describe::openapi(r, base).map(|d| (d.to_string(), "application/json")),
        }
    }

    /// The registered services with the links to their descriptions (the public listener's
    /// `/public/services`).
    pub fn listing(&self) -> serde_json::Value {
        let items: Vec<serde_json::Value> = self
            .registered
            .iter()
            .map(|r| {
                let (kind, link) = match r.def.protocol {
                    adapters::Protocol::Soap => ("wsdl", format!("/public/services/{}.wsdl", r.def.id)),
                    adapters::Protocol::Json => ("openapi", format!("/public/services/{}.openapi.json", r.def.id)),
                };
                serde_json::json!({ "id": r.def.id, "source": r.def.source, "method": r.def.method.as_str(),
                    "path": r.def.path, "description": { "kind": kind, "href": link } })
            })
            .collect();
        serde_json::json!({ "services": items })
    }
}

/// `https://` and the host a request was sent to (its `Host` header or, in HTTP/2, its
/// authority), with `port` instead of the one it named when given.
pub fn base_url(req: &http::Request<hyper::body::Incoming>, port: Option<u16>) -> String {
    let host = req
        .uri()
        .authority()
        .map(|a| a.as_str().to_owned())
        .or_else(|| req.headers().get(http::header::HOST).and_then(|h| h.to_str().ok()).map(str::to_owned))
        .unwrap_or_else(|| "localhost".to_owned());
    let Some(p) = port else { return format!("https://{host}") };
    let name = match host.rsplit_once(':') {
        Some((n, d))
            if !d.is_empty() && d.bytes().all(|b| b.is_ascii_digit()) && (!n.contains(':') || n.ends_with(']')) =>
        {
            n
        }
        _ => host.as_str(),
    };
    format!("https://{name}:{p}")
}
