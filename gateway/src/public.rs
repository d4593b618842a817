//! The public listener, served over HTTPS to anyone, without a client certificate:
//!
//! * `GET /public/instruments` (JSON) and `GET /public/instruments.html` — the published flows
//!   ([`crate::publication`]), from the policy in force at each call.
//! * `GET /public/associations/{vCode}` — the association register's public subset (DOMAIN.md
//!   §4; art. 4/1 §2), when the register is configured.
//!
//! `GET /public/associations/{vCode}` asks the register's production side, checks the answer
//! against the published layout, and hands back only the public items of an *active*
//! association that may be published; a de facto association that opted out, an inactive one
//! and an unknown one all get the same 404, so the answer reveals nothing about them. No
//! personal data is released here (representatives and bank account are not public items),
//! so these calls are counted in the metrics but leave no audit record.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderValue, Method, Request, Response, StatusCode, Uri, header};
use http_body_util::{BodyExt, Empty, Full, Limited};
use hyper::body::Incoming;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::{TokioExecutor, TokioIo};
use policies::ids::VCode;
use tokio::net::TcpListener;
use tokio::sync::watch;

use crate::error::{self, Body, Code, Dialect, Refusal};
use crate::pipeline::forward::hv;

const PREFIX: &str = "/public/associations/";

/// What the public listener needs.
#[derive(Debug)]
pub struct Public {
    policy: Arc<crate::policy::PolicyHandle>,
    associations: Option<Associations>,
    metrics: crate::metrics::Metrics,
    ids: crate::pipeline::envelope::RequestIds,
    /// The registered services and the data plane's port, for their descriptions.
    services: Option<(Arc<crate::registered::Keeper>, u16)>,
}

/// The association register's public subset.
#[derive(Debug)]
pub struct Associations {
    client: Client<HttpConnector, Empty<Bytes>>,
    /// The register's production URI (`…/v1/verenigingen`).
    upstream: Uri,
    timeout: Duration,
    max_bytes: usize,
    layout: adapters::layout::Layout,
}

impl Public {
    pub fn new(
        policy: Arc<crate::policy::PolicyHandle>,
        associations: Option<Associations>,
        metrics: crate::metrics::Metrics,
    ) -> Self {
        Public { policy, associations, metrics, ids: crate::pipeline::envelope::RequestIds::new(), services: None }
    }

    /// Publishes the registered services' descriptions, with the data plane on `data_port`.
    pub fn with_services(mut self, keeper: Arc<crate::registered::Keeper>, data_port: u16) -> Self {
        self.services = Some((keeper, data_port));
        self
    }

    pub async fn handle(&self, req: Request<Incoming>) -> Response<Body> {
        // The caller's request id, echoed on every answer (one is made when it sent none).
        let (rid, malformed) = match self.ids.take(req.headers()) {
            Ok(rid) => (rid, None),
            Err((rid, refusal)) => (rid, Some(refusal)),
        };
        let path = req.uri().path();
        let (label, result) = if let Some(refusal) = malformed {
            ("unknown", Err(refusal))
        } else if path == "/public/instruments" || path == "/public/instruments.html" {
            ("publication", self.publication(&req))
        } else if path == "/public/services" || path.starts_with("/public/services/") {
            ("services.description", self.description(&req))
        } else if path.starts_with(PREFIX) {
            let r = match &self.associations {
                Some(a) => a.answer(&req).await,
                None => Err(Refusal::new(Code::ServiceUnknown, "the association register is not configured here")),
            };
            ("associations.public", r)
        } else {
            let r = Err(Refusal::new(
                Code::ServiceUnknown,
                "the public listener serves /public/instruments, /public/instruments.html, /public/services, \
                 /public/services/{id}.wsdl, /public/services/{id}.openapi.json and /public/associations/{vCode}",
            ));
            ("unknown", r)
        };
        let (mut resp, code) = match result {
            Ok(r) => (r, ""),
            Err(refusal) => {
                (error::respond(&refusal, Dialect::Json, rid.to_str().unwrap_or_default()), refusal.code.as_str())
            }
        };
        resp.headers_mut().insert(crate::pipeline::envelope::REQUEST_ID, rid);
        let outcome = if code.is_empty() { "granted" } else { "refused" };
        self.metrics.requests.with_label_values(&[label, "public", outcome, code]).inc();
        resp
    }

    /// `/public/services`: the registered services; `/public/services/{id}.wsdl` and
    /// `/public/services/{id}.openapi.json`: their descriptions.
    fn description(&self, req: &Request<Incoming>) -> Result<Response<Body>, Refusal> {
        if req.method() != Method::GET {
            return Err(Refusal::method_not_allowed("the descriptions are read with GET", "GET"));
        }
        let unknown = || Refusal::new(Code::ServiceUnknown, "no registered service has this description");
        let (keeper, port) = self.services.as_ref().ok_or_else(unknown)?;
        let plane = keeper.plane.load();
        let path = req.uri().path();
        let (body, ct) = if path == "/public/services" {
            (plane.listing().to_string(), "application/json")
        } else {
            let name = path.strip_prefix("/public/services/").unwrap_or_default();
            let (id, kind) = match (name.strip_suffix(".wsdl"), name.strip_suffix(".openapi.json")) {
                (Some(id), _) => (id, crate::registered::Description::Wsdl),
                (_, Some(id)) => (id, crate::registered::Description::OpenApi),
                _ => return Err(unknown()),
            };
            let base = crate::registered::base_url(req, Some(*port));
            plane.describe(id, kind, &base).ok_or_else(unknown)?
        };
        let mut resp = Response::new(Full::new(Bytes::from(body)));
        resp.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static(ct));
        Ok(resp)
    }

    fn publication(&self, req: &Request<Incoming>) -> Result<Response<Body>, Refusal> {
        if req.method() != Method::GET {
            return Err(Refusal::method_not_allowed("the publication is read with GET", "GET"));
        }
        let (policy, snapshot, now) = (self.policy.model(), self.policy.current(), self.policy.now_secs());
        let (body, ct) = if req.uri().path().ends_with(".html") {
            (crate::publication::html(&policy, &snapshot, now), "text/html; charset=utf-8")
        } else {
            (crate::publication::document(&policy, &snapshot, now).to_string(), "application/json")
        };
        let mut resp = Response::new(Full::new(Bytes::from(body)));
        resp.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static(ct));
        Ok(resp)
    }
}

impl Associations {
    pub fn new(upstream: &str, timeout: Duration, max_bytes: usize) -> anyhow::Result<Self> {
        let service = adapters::associations::association_service();
        let upstream = format!("{}{}", upstream.trim_end_matches('/'), service.upstream_path).parse()?;
        let layout = service.layout.map(adapters::layout::Layout::new).transpose()?;
        let layout = layout.ok_or_else(|| anyhow::anyhow!("the association register has no layout"))?;
        let client = Client::builder(TokioExecutor::new()).build(HttpConnector::new());
        Ok(Associations { client, upstream, timeout, max_bytes, layout })
    }

    async fn answer(&self, req: &Request<Incoming>) -> Result<Response<Body>, Refusal> {
        let Some(raw) = req.uri().path().strip_prefix(PREFIX) else {
            return Err(Refusal::new(Code::ServiceUnknown, "the public listener serves /public/associations/{vCode}"));
        };
        if req.method() != Method::GET {
            return Err(Refusal::method_not_allowed("this service is called with GET", "GET"));
        }
        let vcode = VCode::parse(raw).map_err(|e| Refusal::new(Code::SubjectInvalid, format!("vCode: {e}")))?;
        let not_public = || Refusal::new(Code::SubjectNotFound, "no public association has this vCode");
        let mut up = Request::new(Empty::new());
        *up.uri_mut() = self.upstream.clone();
        up.headers_mut().insert(crate::pipeline::envelope::SUBJECT, hv(&vcode.to_string()));
        up.headers_mut().insert(crate::pipeline::envelope::RECIPIENT, HeaderValue::from_static("public"));
        let unavailable = || Refusal::new(Code::UpstreamUnavailable, "the association register cannot be reached");
        let call = async {
            let resp = self.client.request(up).await.map_err(|_| unavailable())?;
            let status = resp.status();
            let body = Limited::new(resp.into_body(), self.max_bytes).collect().await.map_err(|_| unavailable())?;
            Ok::<_, Refusal>((status, body.to_bytes()))
        };
        let (status, body) = tokio::time::timeout(self.timeout, call)
            .await
            .map_err(|_| Refusal::new(Code::UpstreamTimeout, "the association register did not answer in time"))??;
        if status == StatusCode::NOT_FOUND {
            return Err(not_public());
        }
        if status != StatusCode::OK {
            return Err(unavailable());
        }
        let doc = adapters::layout::parse_answer(&body)
            .map_err(|why| Refusal::new(Code::UpstreamLayoutViolation, format!("the register's answer {why}")))?;
        self.layout
            .check(&doc)
            .map_err(|why| Refusal::new(Code::UpstreamLayoutViolation, format!("the register: {why}")))?;
        if !adapters::associations::is_public(&doc) {
            return Err(not_public());
        }
        let public = self.layout.minimise(doc, |f| adapters::associations::PUBLIC_FIELDS.contains(&f));
        let body = adapters::layout::write_answer(&public, body.len());
        let mut resp = Response::new(Full::new(Bytes::from(body)));
        resp.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
        Ok(resp)
    }
}

/// Serves the public listener over TLS (no client certificate) until `shutdown` turns true.
pub(crate) async fn serve(
    listener: TcpListener,
    listen: crate::server::Listen,
    public: Arc<Public>,
    mut shutdown: watch::Receiver<bool>,
) {
    let builder = crate::server::http_builder(&listen.connections.bounds, &crate::config::Limits::default());
    loop {
        let (tcp, peer) = tokio::select! {
            a = listener.accept() => match a {
                Ok(a) => a,
                Err(_) => { tokio::time::sleep(Duration::from_millis(50)).await; continue }
            },
            _ = shutdown.changed() => break,
        };
        // Anyone may connect here: each address holds at most `max_per_peer` connections.
        let Some(mut slot) = listen.admit(peer) else { continue };
        let (listen, public, builder) = (listen.clone(), public.clone(), builder.clone());
        tokio::spawn(async move {
            let Some((tls, _open)) = listen.handshake(tcp, peer).await else { return };
            let state = slot.open(&[], None, None);
            let svc = crate::conn::counted(state.clone(), move |req| {
                let public = public.clone();
                async move { public.handle(req).await }
            });
            let conn = builder.serve_connection(TokioIo::new(tls), svc).into_owned();
            let _ = crate::conn::drive(conn, &state).await;
            drop(slot);
        });
    }
    drop(listener);
    listen.drained().await;
}
