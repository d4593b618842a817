//! The operations listener (plain HTTP, loopback by default): `/healthz` (the process answers),
//! `/readyz` (each dependency by name: store, audit trail, policy, every source), `/metrics`.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use bytes::Bytes;
use http::{Request, Response, StatusCode, header};
use http_body_util::Full;
use hyper::body::Incoming;
use tokio::net::TcpListener;
use tokio::sync::watch;

use crate::audit::AuditTrail;
use crate::error::Body;
use crate::metrics::Metrics;
use crate::policy::PolicyHandle;
use crate::store::Store;

/// What `/readyz` and `/metrics` look at.
#[derive(Debug)]
pub struct Ops {
    pub metrics: Metrics,
    pub store: Arc<dyn Store>,
    pub audit: Arc<AuditTrail>,
    pub policy: Arc<PolicyHandle>,
    /// (source name, host:port) of every configured upstream side.
    pub upstreams: Vec<(String, String)>,
    /// A replica of a shared store: whether it holds every change of the other replicas.
    pub sync: Option<Arc<crate::store::postgres::SyncState>>,
    /// Request ids: the caller's `X-Request-Id` is echoed, as on every listener.
    pub ids: crate::pipeline::envelope::RequestIds,
    /// The registered services, whose upstreams `/readyz` reports.
    pub registered: Option<Arc<crate::registered::Keeper>>,
    /// The data plane's last hour (`GET /activity` on the control plane).
    pub activity: Arc<crate::activity::Activity>,
}

fn reply(status: StatusCode, content_type: &'static str, body: String) -> Response<Body> {
    let mut r = Response::new(Full::new(Bytes::from(body)));
    *r.status_mut() = status;
    r.headers_mut().insert(header::CONTENT_TYPE, http::HeaderValue::from_static(content_type));
    r
}

impl Ops {
    fn refresh(&self) {
        let s = &self.audit.status;
        // The trail counts since start; the counters catch up with it (never down).
        let catch_up = |c: &prometheus::IntCounter, now: u64| c.inc_by(now.saturating_sub(c.get()));
        catch_up(&self.metrics.audit_records, s.records.load(Ordering::Relaxed));
        catch_up(&self.metrics.audit_batches, s.batches.load(Ordering::Relaxed));
        self.metrics.audit_writable.set(i64::from(s.writable.load(Ordering::Acquire)));
        self.metrics.policy_version.set(self.policy.current().version() as i64);
        // Certificates the gateway signed: the soonest end per organisation, by the gateway's
        // clock (enterprise numbers are not personal data).
        let now = self.policy.now_secs();
        self.metrics.certificate_days_left.reset();
        for o in self.policy.model().organisations.iter() {
            if let Some(end) = o.certificates.iter().map(|c| c.not_after).min() {
                let mut d = [0u8; 10];
                let days = (end - now).div_euclid(86_400);
                self.metrics.certificate_days_left.with_label_values(&[o.kbo.digits(&mut d)]).set(days);
            }
        }
        self.metrics.policy_age.set(self.policy.age().as_secs_f64());
    }

    async fn ready(&self) -> Response<Body> {
        let (all, doc) = self.readiness().await;
        let status = if all { StatusCode::OK } else { StatusCode::SERVICE_UNAVAILABLE };
        reply(status, "application/json", doc.to_string())
    }

    /// Whether the gateway can answer, and the document `/readyz` serves: the store, the
    /// trail, the policy, each source's reachability.
    pub async fn readiness(&self) -> (bool, serde_json::Value) {
        let in_sync = self.sync.as_ref().is_none_or(|s| s.in_sync());
        let st = self.store.clone();
        let store = in_sync
            && tokio::task::spawn_blocking(move || st.meta_get("format").map(|v| v.is_some()).unwrap_or(false))
                .await
                .unwrap_or(false);
        let audit = self.audit.status.writable.load(Ordering::Acquire);
        let snapshot = self.policy.current();
        let policy = snapshot.grant_count() > 0;
        let mut sources = serde_json::Map::new();
        let mut all = store && audit && policy;
        for (name, addr) in &self.upstreams {
            let up = matches!(
                tokio::time::timeout(Duration::from_millis(300), tokio::net::TcpStream::connect(addr.as_str())).await,
                Ok(Ok(_))
            );
            all &= up;
            sources.insert(name.clone(), serde_json::Value::Bool(up));
        }
        // Registered sources are reported, not counted: a data owner's upstream that is down
        // must not take the whole gateway out of its load balancer.
        let mut registered = serde_json::Map::new();
        if let Some(k) = &self.registered {
            let plane = k.plane.load_full();
            for route in plane.table.routes() {
                let name = route.service.source;
                if sources.contains_key(name) || registered.contains_key(name) {
                    continue;
                }
                let Some(addr) = route.upstream.uri.authority().map(|a| a.as_str().to_owned()) else { continue };
                let up = matches!(
                    tokio::time::timeout(Duration::from_millis(300), tokio::net::TcpStream::connect(addr)).await,
                    Ok(Ok(_))
                );
                registered.insert(name.to_owned(), serde_json::Value::Bool(up));
            }
        }
        let doc = serde_json::json!({
            "ready": all,
            "registered_sources": registered,
            "store": store,
            "store_in_sync": in_sync,
            "audit_writable": audit,
            "policy": { "loaded": policy, "version": snapshot.version(), "grants": snapshot.grant_count() },
            "sources": sources,
        });
        (all, doc)
    }

    pub async fn handle(&self, req: Request<Incoming>) -> Response<Body> {
        // A malformed id is replaced by a fresh one: this listener refuses nothing for it.
        let rid = self.ids.take(req.headers()).unwrap_or_else(|(fresh, _)| fresh);
        let mut resp = if !matches!(*req.method(), http::Method::GET | http::Method::HEAD) {
            let mut r = reply(StatusCode::METHOD_NOT_ALLOWED, "text/plain", "read with GET\n".into());
            r.headers_mut().insert(header::ALLOW, http::HeaderValue::from_static("GET, HEAD"));
            r
        } else {
            match req.uri().path() {
                "/healthz" => reply(StatusCode::OK, "text/plain", "ok\n".into()),
                "/readyz" => self.ready().await,
                "/metrics" => {
                    self.refresh();
                    reply(StatusCode::OK, "text/plain; version=0.0.4", self.metrics.render())
                }
                _ => reply(StatusCode::NOT_FOUND, "text/plain", "not found\n".into()),
            }
        };
        resp.headers_mut().insert(crate::pipeline::envelope::REQUEST_ID, rid);
        resp
    }
}

/// Serves the operations endpoints on `listener` until `shutdown` turns true.
pub async fn serve(
    listener: TcpListener,
    ops: Arc<Ops>,
    connections: Arc<crate::conn::Connections>,
    mut shutdown: watch::Receiver<bool>,
) {
    let mut builder = hyper::server::conn::http1::Builder::new();
    builder.timer(hyper_util::rt::TokioTimer::new()).header_read_timeout(connections.bounds.header_read_timeout);
    loop {
        let (tcp, peer) = tokio::select! {
            a = listener.accept() => match a { Ok(a) => a, Err(_) => { tokio::time::sleep(Duration::from_millis(50)).await; continue } },
            _ = shutdown.changed() => return,
        };
        let Some(mut slot) = connections.admit(peer.ip()) else { continue };
        let (ops, builder) = (ops.clone(), builder.clone());
        tokio::spawn(async move {
            let state = slot.open(&[], None, None);
            let svc = crate::conn::counted(state.clone(), move |req| {
                let ops = ops.clone();
                async move { ops.handle(req).await }
            });
            let conn = builder.serve_connection(hyper_util::rt::TokioIo::new(tcp), svc);
            let _ = crate::conn::drive(conn, &state).await;
            drop(slot);
        });
    }
}

/// The host:port of an upstream URL, for the reachability probe.
pub fn authority(url: &str) -> Option<String> {
    let uri: http::Uri = url.parse().ok()?;
    let a = uri.authority()?;
    let default = if uri.scheme_str() == Some("https") { 443 } else { 80 };
    Some(format!("{}:{}", a.host(), a.port_u16().unwrap_or(default)))
}

/// Where the operations listener is, when it is on.
pub type OpsAddr = Option<SocketAddr>;
