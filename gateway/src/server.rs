//! The data-plane listener: TCP accept → TLS handshake (client certificate required) → the
//! caller's identity, read once per connection → HTTP/1.1 or HTTP/2 (ALPN) → [`Pipeline`].

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use arc_swap::ArcSwap;
use http::{Request, Response, Uri};
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio_rustls::TlsAcceptor;

use crate::admin::ControlPlane;
use crate::audit::index::AuditIndex;
use crate::audit::{self, AuditTrail, Recovery};
use crate::config::{Config, StoreKind};
use crate::conn::{Bounds, Connections};
use crate::consent::{ConsentStore, Registry};
use crate::error::Body;
use crate::pipeline::Pipeline;
use crate::pipeline::envelope::RequestIds;
use crate::pipeline::forward::{Source, Upstreams};
use crate::pipeline::identity::Caller;
use crate::pipeline::limits::Limits;
use crate::pipeline::route::{Route, Table, Upstream};
use crate::policy::{Changes, PolicyHandle};
use crate::reload::Reloader;
use crate::store::postgres::{PgStore, SyncState};
use crate::store::{SledStore, Store};
use crate::tls;

/// How long in-flight calls get to finish after shutdown is asked.
pub const SHUTDOWN_GRACE: Duration = Duration::from_secs(10);

/// Builds the route table and upstream settings from the adapters' catalogue and the
/// configured sources. A service whose source is not configured is not exposed.
pub fn build_pipeline(
    cfg: &Config,
    policy: Arc<PolicyHandle>,
    audit: Arc<AuditTrail>,
    consent: Arc<Registry>,
    metrics: crate::metrics::Metrics,
    registered: Arc<crate::registered::Keeper>,
) -> anyhow::Result<Pipeline> {
    let mut sources = Vec::new();
    let mut routes = Vec::new();
    for service in adapters::catalogue() {
        let Some(sc) = cfg.sources.get(service.source) else {
            tracing::info!(service = service.id, "source not configured; service not exposed");
            continue;
        };
        let source = match sources.iter().position(|s: &Source| s.name == service.source) {
            Some(i) => i,
            None => {
                let tls = sc
                    .tls
                    .as_ref()
                    .map(tls::source_client_config)
                    .transpose()
                    .with_context(|| format!("sources.{}.tls", service.source))?;
                sources.push(Source {
                    name: service.source.to_owned(),
                    timeout: Duration::from_millis(sc.timeout_ms),
                    max_response_bytes: sc.max_response_bytes,
                    breaker: crate::pipeline::breaker::Settings {
                        failures: sc.breaker_failures,
                        open_for: Duration::from_millis(sc.breaker_open_ms),
                    },
                    tls,
                });
                sources.len() - 1
            }
        };
        let upstream = |base: &str, key: &str| -> anyhow::Result<Upstream> {
            let uri: Uri = format!("{}{}", base.trim_end_matches('/'), service.upstream_path)
                .parse()
                .with_context(|| format!("sources.{}.{key}", service.source))?;
            Upstream::new(uri).map_err(|e| anyhow::anyhow!("sources.{}.{key}: {e}", service.source))
        };
        let upstream_at = upstream(&sc.upstream, "upstream")?;
        let test_upstream = sc.test_upstream.as_deref().map(|b| upstream(b, "test_upstream")).transpose()?;
        let layout = service
            .layout
            .map(adapters::layout::Layout::new)
            .transpose()
            .with_context(|| format!("the layout of {}", service.id))?;
        routes.push(Route { service, upstream: upstream_at, test_upstream, source, layout, sandbox: None });
    }
    let snapshot = policy.current();
    for r in &routes {
        if snapshot.service(r.service.id).is_none() {
            tracing::warn!(service = r.service.id, "no bundle declares this service: every call to it is refused");
        }
    }
    metrics.sources(sources.iter().map(|s| s.name.as_str()));
    let upstreams = Upstreams::new(sources, metrics.circuit_open.clone());
    Ok(Pipeline {
        audit,
        consent,
        rate: crate::pipeline::rate::RateLimiter::default(),
        metrics,
        policy,
        limits: Limits::new(&cfg.limits),
        routes: Table::new(routes),
        upstreams,
        ids: RequestIds::new(),
        sync: None,
        registered,
    })
}

/// A gateway whose data plane is listening.
#[derive(Debug)]
pub struct RunningGateway {
    pub data_addr: SocketAddr,
    /// The control plane's address, when it is enabled.
    pub control_addr: Option<SocketAddr>,
    /// The operations listener's address, when it is enabled.
    pub ops_addr: Option<SocketAddr>,
    /// The public listener's address, when it is enabled.
    pub public_addr: Option<SocketAddr>,
    pub store: Arc<dyn Store>,
    /// The policy the data plane enforces; `replace` swaps it atomically.
    pub policy: Arc<PolicyHandle>,
    /// The one writer of the policy (control plane, bundle imports).
    pub changes: Arc<Changes>,
    /// Reloads the TLS material and the bundles (SIGHUP, `POST /reload`).
    pub reloader: Arc<Reloader>,
    /// The consent registry.
    pub consent: Arc<Registry>,
    /// The audit trail and what opening it repaired.
    pub audit: Arc<AuditTrail>,
    pub recovery: Recovery,
    /// A replica of a shared store: whether it is in step, and how it caught up.
    pub sync: Option<Arc<SyncState>>,
    shutdown: watch::Sender<bool>,
    task: JoinHandle<()>,
}

impl RunningGateway {
    /// Stops accepting, lets in-flight calls finish (up to [`SHUTDOWN_GRACE`]) and returns.
    pub async fn shutdown(self) {
        let _ = self.shutdown.send(true);
        let _ = self.task.await;
    }

    /// Waits until the listener stops (after [`RunningGateway::shutdown`] from elsewhere).
    pub async fn wait(self) {
        let _ = self.task.await;
    }

    /// A handle that can ask this gateway to shut down.
    pub fn shutdown_handle(&self) -> watch::Sender<bool> {
        self.shutdown.clone()
    }
}

type Opened = (Arc<dyn Store>, Arc<dyn AuditIndex>, Arc<Registry>, Option<Arc<PgStore>>);

/// Opens the configured store and the consent registry on it.
pub fn open_store(cfg: &Config) -> anyhow::Result<Opened> {
    match cfg.store.kind {
        StoreKind::Sled => {
            let s = Arc::new(SledStore::open_with_cache(&cfg.store.path, cfg.store.cache_mb)?);
            let image = cfg.store.path.join(crate::consent::IMAGE_FILE);
            let consent = Arc::new(Registry::open_with_image(ConsentStore::open(&s)?, Some(image))?);
            Ok((s.clone(), s, consent, None))
        }
        StoreKind::Postgres => {
            let (Some(url), Some(replica)) = (cfg.store.url.as_deref(), cfg.store.replica.as_deref()) else {
                anyhow::bail!("store.kind = \"postgres\" needs store.url and store.replica");
            };
            let tls = cfg.store.tls.as_ref().map(tls::store_client_config).transpose().context("store.tls")?;
            let pg = Arc::new(
                PgStore::open(url, replica, Duration::from_millis(cfg.store.timeout_ms), tls)
                    .context("cannot open the PostgreSQL store")?,
            );
            let consent = Arc::new(Registry::open(ConsentStore::Postgres(pg.clone()))?);
            tracing::info!(replica, "shared PostgreSQL store open");
            Ok((pg.clone(), pg.clone(), consent, Some(pg)))
        }
    }
}

/// Binds the data plane and starts serving.
pub async fn start(cfg: &Config) -> anyhow::Result<RunningGateway> {
    let tls = Reloader::tls(cfg)?;
    let (store, index, consent, shared) = open_store(cfg)?;
    let (trail, recovery) = audit::open(&cfg.audit, index.clone()).context("audit trail")?;
    tracing::info!(
        last_seq = recovery.last_seq,
        torn_bytes = recovery.torn_bytes,
        reindexed = recovery.reindexed,
        checkpoints_checked = recovery.checkpoints_checked,
        "audit trail open"
    );
    let audit = Arc::new(trail);
    let metrics = crate::metrics::Metrics::new().context("metrics")?;
    let (size, commit) = (metrics.audit_batch_size.clone(), metrics.audit_commit.clone());
    let observer = crate::audit::trail::BatchObserver(Box::new(move |records, took| {
        size.observe(records as f64);
        commit.observe(took.as_secs_f64());
    }));
    let _ = audit.status.on_batch.set(observer);
    // Paced group commits at sustained load count the data plane's open connections (the
    // gauge its listener keeps, `Listen::new` below).
    audit.pace_by(metrics.connections.with_label_values(&["data"]));
    // The store holds the policy; the configured bundles are imported when they changed.
    let policy = Arc::new(PolicyHandle::from_store(store.as_ref())?);
    let changes = Arc::new(Changes::new(policy.clone(), store.clone(), audit.clone()));
    // The registered services: checked before every change, rebuilt with every version.
    let registered = crate::registered::Keeper::new(cfg, &metrics, &policy.model())?;
    let keeper = registered.clone();
    policy.on_install(move |p| keeper.install(p));
    let keeper = registered.clone();
    changes.on_check(move |p| keeper.check(p));
    match changes.sync_bundles(&cfg.policy).await? {
        Some(version) => tracing::info!(version, "policy bundles imported into the store"),
        None => tracing::info!(version = policy.version(), "policy from the store (bundles unchanged)"),
    }
    let (shutdown, shutdown_rx) = watch::channel(false);
    // A replica of a shared store follows the others' changes; until it has read them all it
    // refuses calls (STORE_UNAVAILABLE).
    let sync = shared.map(|pg| {
        let state = Arc::new(SyncState::default());
        tokio::spawn(crate::store::postgres::follow(
            pg,
            policy.clone(),
            consent.clone(),
            state.clone(),
            shutdown_rx.clone(),
        ));
        state
    });
    // Listen only once the follower holds the other replicas' changes: a replica that has just
    // started should answer, not refuse its first calls. Should that take longer than a store
    // call may, it listens anyway and refuses (STORE_UNAVAILABLE) until it is in sync.
    if let Some(state) = &sync {
        let deadline = tokio::time::Instant::now() + Duration::from_millis(cfg.store.timeout_ms);
        while !state.in_sync() && tokio::time::Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        if !state.in_sync() {
            tracing::warn!("not yet in sync with the shared store; calls are refused until it is");
        }
    }
    let mut pipeline = build_pipeline(cfg, policy.clone(), audit.clone(), consent.clone(), metrics, registered)?;
    pipeline.sync = sync.clone();
    let pipeline = Arc::new(pipeline);
    let listener =
        TcpListener::bind(cfg.data.listen).await.with_context(|| format!("cannot listen on {}", cfg.data.listen))?;
    let data_addr = listener.local_addr()?;
    // The data and control planes read headers within `limits.header_read_timeout_ms` unless
    // their `[connections.*]` table says otherwise.
    let mtls_bounds = |name: &str, c: &crate::conn::BoundsConfig| {
        let mut b = Bounds::of(name, c);
        if c.header_read_timeout_ms.is_none() {
            b.header_read_timeout = cfg.limits.header_read_timeout();
        }
        b
    };
    let data_bounds = mtls_bounds("data", &cfg.connections.data);
    let control_bounds = mtls_bounds("control", &cfg.connections.control);
    let data_conns = Connections::new("data", data_bounds, &pipeline.metrics);
    let control_conns = Connections::new("control", control_bounds, &pipeline.metrics);
    let mtls_conns = vec![data_conns.clone(), control_conns.clone()];
    let reloader = Arc::new(Reloader::new(cfg, tls, mtls_conns.clone(), changes.clone(), pipeline.metrics.clone()));
    let handshake_timeout = Duration::from_millis(cfg.tls.handshake_timeout_ms);
    tracing::info!(addr = %data_addr, services = pipeline.routes.len(), "data plane listening");

    // What the operations listener and GET /activity read: readiness, metrics, the last hour.
    let activity = crate::activity::Activity::new(&pipeline.metrics);
    tokio::spawn(activity.clone().run(shutdown_rx.clone()));
    let upstreams = cfg
        .sources
        .iter()
        .flat_map(|(name, s)| {
            [Some(&s.upstream), s.test_upstream.as_ref()]
                .into_iter()
                .flatten()
                .filter_map(|u| crate::ops::authority(u).map(|a| (name.clone(), a)))
                .collect::<Vec<_>>()
        })
        .collect();
    let ops = Arc::new(crate::ops::Ops {
        metrics: pipeline.metrics.clone(),
        store: store.clone(),
        audit: audit.clone(),
        policy: policy.clone(),
        upstreams,
        sync: sync.clone(),
        ids: crate::pipeline::envelope::RequestIds::new(),
        registered: Some(pipeline.registered.clone()),
        activity,
    });
    // The control plane: same TLS material, its own listener and handler.
    let control = match cfg.control.listen {
        Some(addr) => {
            let l =
                TcpListener::bind(addr).await.with_context(|| format!("cannot listen on {addr} (control plane)"))?;
            let plane = Arc::new(ControlPlane::new(
                &cfg.control,
                changes.clone(),
                reloader.clone(),
                audit.clone(),
                index.clone(),
                consent.clone(),
                store.clone(),
                ops.clone(),
            )?);
            tracing::info!(addr = %l.local_addr()?, "control plane listening");
            Some((l, plane))
        }
        None => None,
    };
    let control_addr = control.as_ref().map(|(l, _)| l.local_addr()).transpose()?;
    // The operations listener: health, readiness, metrics.
    let ops_addr = match cfg.ops.listen {
        Some(addr) => {
            let l = TcpListener::bind(addr).await.with_context(|| format!("cannot listen on {addr} (operations)"))?;
            let a = l.local_addr()?;
            let conns = Connections::new("ops", Bounds::of("ops", &cfg.connections.ops), &pipeline.metrics);
            tokio::spawn(conns.clone().sweeper(shutdown_rx.clone()));
            tokio::spawn(crate::ops::serve(l, ops.clone(), conns, shutdown_rx.clone()));
            tracing::info!(addr = %a, "operations listening");
            Some(a)
        }
        None => None,
    };
    // The public listener: the publication of the flows, and the association register's
    // public subset when the register is configured.
    let public_addr = match cfg.public.listen {
        Some(addr) => {
            let l = TcpListener::bind(addr).await.with_context(|| format!("cannot listen on {addr} (public)"))?;
            let a = l.local_addr()?;
            let associations = cfg
                .sources
                .get("associations")
                .map(|sc| {
                    crate::public::Associations::new(
                        &sc.upstream,
                        Duration::from_millis(sc.timeout_ms),
                        sc.max_response_bytes,
                    )
                })
                .transpose()
                .context("public listener")?;
            let public = crate::public::Public::new(policy.clone(), associations, pipeline.metrics.clone())
                .with_services(pipeline.registered.clone(), data_addr.port());
            let conns = Connections::new("public", Bounds::of("public", &cfg.connections.public), &pipeline.metrics);
            tokio::spawn(conns.clone().sweeper(shutdown_rx.clone()));
            let listen =
                Listen::new(reloader.public.clone(), handshake_timeout, pipeline.metrics.clone(), "public", conns);
            tokio::spawn(crate::public::serve(l, listen, Arc::new(public), shutdown_rx.clone()));
            tracing::info!(addr = %a, "public listener");
            Some(a)
        }
        None => None,
    };
    // Retention: once a day, whole segments older than the retention are removed — never
    // sooner than the longest minimum a source declares (seed 003: ten years).
    tokio::spawn(prune_daily(
        pipeline.audit.dir.clone(),
        cfg.audit.retention_days,
        policy.clone(),
        shutdown_rx.clone(),
    ));
    // Refused handshakes on the mTLS listeners, written once a second (seed 004: attempts too).
    let attempts = Arc::new(crate::audit::attempts::Attempts::default());
    let attempts_task = tokio::spawn(attempts.clone().run(pipeline.audit.clone(), shutdown_rx.clone()));
    let control = match control {
        Some((l, plane)) => {
            let metrics_url = cfg.ops.listen.map(|a| format!("http://{a}/metrics"));
            let public_port = public_addr.map(|a| a.port());
            let console =
                Arc::new(crate::console::Console::new(plane.clone(), policy.clone(), metrics_url, public_port)?);
            Some((l, plane, console))
        }
        None => None,
    };
    let control_task = control.map(|(l, plane, console)| {
        let handler = move |req: Request<Incoming>, caller: Arc<Caller>| {
            let (plane, console) = (plane.clone(), console.clone());
            async move {
                if crate::console::owns(req.uri().path()) {
                    console.handle(req, &caller).await
                } else {
                    plane.handle(req, &caller).await
                }
            }
        };
        tokio::spawn(control_conns.clone().sweeper(shutdown_rx.clone()));
        let mut listen =
            Listen::new(reloader.mtls.clone(), handshake_timeout, pipeline.metrics.clone(), "control", control_conns);
        listen.attempts = Some(attempts.clone());
        let builder = http_builder(&control_bounds, &cfg.limits);
        tokio::spawn(serve_mtls(l, listen, builder, shutdown_rx.clone(), handler))
    });
    let data_pipeline = pipeline.clone();
    tokio::spawn(data_conns.clone().sweeper(shutdown_rx.clone()));
    let mut listen =
        Listen::new(reloader.mtls.clone(), handshake_timeout, pipeline.metrics.clone(), "data", data_conns);
    listen.attempts = Some(attempts.clone());
    // Organisations that leave the policy lose their open connections too.
    tokio::spawn(end_departed(policy.clone(), mtls_conns, shutdown_rx.clone()));
    let data_task = tokio::spawn(serve_mtls(
        listener,
        listen,
        http_builder(&data_bounds, &cfg.limits),
        shutdown_rx,
        move |req: Request<Incoming>, caller: Arc<Caller>| {
            let pipeline = data_pipeline.clone();
            // Boxed: the call's future is some 4 KB, and hyper and the connection's counting
            // wrapper each moved it by value (a `memcpy` of all of it, twice a call).
            Box::pin(async move { pipeline.handle(req, &caller).await })
        },
    ));
    let registry = consent.clone();
    let task = tokio::spawn(async move {
        let _ = data_task.await;
        if let Some(t) = control_task {
            let _ = t.await;
        }
        // The refused handshakes of the last second, before the trail closes.
        let _ = attempts_task.await;
        // Everything answered has its record durable already; write the final checkpoint.
        let trail = pipeline.audit.clone();
        drop(pipeline);
        let _ = tokio::task::spawn_blocking(move || trail.close()).await;
        // Nothing changes consents any more: leave the index's image for the next start.
        let saved = tokio::task::spawn_blocking(move || registry.save_image()).await;
        match saved.map_err(|e| e.to_string()).and_then(|r| r.map_err(|e| e.to_string())) {
            Ok(Some(consents)) => tracing::info!(consents, "consent index image written"),
            Ok(None) => {}
            Err(e) => tracing::warn!(error = %e, "consent index image not written; the next start rebuilds the index"),
        }
    });
    Ok(RunningGateway {
        data_addr,
        control_addr,
        ops_addr,
        public_addr,
        store,
        policy,
        changes,
        reloader,
        consent,
        audit,
        recovery,
        sync,
        shutdown,
        task,
    })
}

/// The retention in force: the configured one, or a source's longer minimum.
pub fn retention_days(configured: u32, policy: &policies::model::Policy) -> u32 {
    policy.audit_retention_floor().map_or(configured, |(floor, _)| configured.max(floor))
}

#[cfg(test)]
mod retention_tests {
    #[test]
    fn a_source_minimum_outlasts_a_shorter_configured_retention() {
        let policy = policies::bundle::load_texts(policies::seed::BUNDLES.iter().copied()).unwrap_or_default();
        assert_eq!(policy.audit_retention_floor(), Some((3653, "rn")));
        assert_eq!(super::retention_days(30, &policy), 3653);
        assert_eq!(super::retention_days(4000, &policy), 4000);
        assert_eq!(super::retention_days(30, &policies::model::Policy::default()), 30);
    }
}

/// Prunes the trail in `dir` a minute after start, then every day, until `shutdown`.
async fn prune_daily(
    dir: std::path::PathBuf,
    configured: u32,
    policy: Arc<crate::policy::PolicyHandle>,
    mut shutdown: watch::Receiver<bool>,
) {
    let mut wait = Duration::from_secs(60);
    loop {
        tokio::select! {
            _ = tokio::time::sleep(wait) => {}
            _ = shutdown.changed() => return,
        }
        wait = Duration::from_secs(86_400);
        let days = retention_days(configured, &policy.model());
        let cutoff = policy.now_ms().saturating_sub(u64::from(days) * 86_400_000);
        match prune_in_background(dir.clone(), cutoff).await {
            Ok(removed) if !removed.is_empty() => {
                tracing::info!(
                    segments = removed.len(),
                    retention_days = days,
                    "audit segments past retention removed"
                );
            }
            Ok(_) => {}
            Err(e) => tracing::warn!(error = %e, "audit pruning failed"),
        }
    }
}

/// Prunes the trail in `dir` on a thread of its own under `SCHED_IDLE`, as the index upkeep
/// runs: a pass reads and decodes the oldest segment (tens of megabytes) to find its newest
/// record, and at normal priority the first pass of a soak at 70 % of saturation took 370 ms
/// of the data plane's core and held its calls for 250 ms (per-second p99 340 ms).
async fn prune_in_background(dir: std::path::PathBuf, cutoff: u64) -> Result<Vec<std::path::PathBuf>, String> {
    let (tx, rx) = tokio::sync::oneshot::channel();
    std::thread::Builder::new()
        .name("audit-prune".into())
        .spawn(move || {
            crate::background::idle_priority("audit-prune");
            let _ = tx.send(crate::audit::verify::prune(&dir, cutoff));
        })
        .map_err(|e| e.to_string())?;
    rx.await.map_err(|_| "the pruning thread stopped without an answer".to_owned())?
}

/// What a TLS listener needs per connection: the server configuration in force (swapped on
/// reload), the handshake deadline, and where to count.
#[derive(Clone)]
pub(crate) struct Listen {
    pub tls: Arc<ArcSwap<rustls::ServerConfig>>,
    pub handshake_timeout: Duration,
    pub metrics: crate::metrics::Metrics,
    /// The listener's metric label.
    pub name: &'static str,
    /// Its open-connections gauge, resolved once.
    pub open: prometheus::IntGauge,
    /// Where refused handshakes are noted for the audit trail (the mTLS listeners).
    pub attempts: Option<Arc<crate::audit::attempts::Attempts>>,
    /// What the listener admits, and its open connections.
    pub connections: Arc<Connections>,
}

impl Listen {
    pub(crate) fn new(
        tls: Arc<ArcSwap<rustls::ServerConfig>>,
        handshake_timeout: Duration,
        metrics: crate::metrics::Metrics,
        name: &'static str,
        connections: Arc<Connections>,
    ) -> Self {
        let open = metrics.connections.with_label_values(&[name]);
        Listen { tls, handshake_timeout, metrics, name, open, attempts: None, connections }
    }

    /// Admits a connection from `peer` within the listener's bounds, or closes it.
    pub(crate) fn admit(&self, peer: SocketAddr) -> Option<crate::conn::Slot> {
        self.connections.admit(peer.ip())
    }

    /// Waits (up to [`SHUTDOWN_GRACE`]) for the listener's connections to end.
    pub(crate) async fn drained(&self) {
        self.connections.drained().await;
    }
}

/// Counts an open connection until dropped.
pub(crate) struct OpenConnection(prometheus::IntGauge);

impl Drop for OpenConnection {
    fn drop(&mut self) {
        self.0.dec();
    }
}

impl Listen {
    /// Runs the TLS handshake with the configuration in force now; a refusal is counted by
    /// reason. The guard counts the connection as open while it lives.
    pub(crate) async fn handshake(
        &self,
        tcp: tokio::net::TcpStream,
        peer: SocketAddr,
    ) -> Option<(tokio_rustls::server::TlsStream<tokio::net::TcpStream>, OpenConnection)> {
        let acceptor = TlsAcceptor::from(self.tls.load_full());
        // The verifier leaves a refused certificate in PRESENTED, for the attempt's record.
        let (outcome, presented) = crate::audit::attempts::PRESENTED
            .scope(std::cell::RefCell::new(None), async {
                let outcome = tokio::time::timeout(self.handshake_timeout, acceptor.accept(tcp).into_fallible()).await;
                let presented = crate::audit::attempts::PRESENTED.with(|p| p.borrow_mut().take());
                (outcome, presented)
            })
            .await;
        let reason = match outcome {
            Ok(Ok(s)) => {
                self.open.inc();
                return Some((s, OpenConnection(self.open.clone())));
            }
            Ok(Err((e, tcp))) => {
                let reason = crate::metrics::tls_reason(&e);
                tracing::debug!(%peer, reason, error = %e, "TLS handshake refused");
                linger(tcp).await;
                reason
            }
            Err(_) => {
                tracing::debug!(%peer, "TLS handshake timed out");
                "timeout"
            }
        };
        self.metrics.tls_failures.with_label_values(&[self.name, reason]).inc();
        // A connection closed before it said anything TLS (a port probe, a load balancer's
        // health check) is no attempted access; everything else is recorded.
        if let Some(a) = self.attempts.as_ref().filter(|_| reason != "io") {
            a.note(self.name, reason, presented.as_deref(), peer.ip());
        }
        None
    }
}

/// Closes a connection whose handshake failed so that the alert rustls wrote reaches the
/// client: the write side first (FIN after the alert), then what the client still sends is read
/// and dropped for a moment. Closing with unread bytes would make the kernel answer with a
/// reset, which the client sees before the alert (curl: "Connection reset" instead of "alert
/// certificate required": in TLS 1.3 the client sends its request before it learns that its
/// missing certificate was refused).
async fn linger(mut tcp: tokio::net::TcpStream) {
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    let drain = async {
        let _ = tcp.shutdown().await;
        let mut buf = [0u8; 4096];
        let mut left: usize = 64 * 1024;
        while left > 0 {
            match tcp.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => left = left.saturating_sub(n),
            }
        }
    };
    let _ = tokio::time::timeout(Duration::from_millis(500), drain).await;
}

impl std::fmt::Debug for Listen {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Listen").field("name", &self.name).finish_non_exhaustive()
    }
}

/// The HTTP/1.1 and HTTP/2 server settings of a listener with `bounds`.
pub(crate) fn http_builder(bounds: &Bounds, limits: &crate::config::Limits) -> auto::Builder<TokioExecutor> {
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(crate::timer::CoarseTimer::spawn())
        .header_read_timeout(bounds.header_read_timeout)
        .max_buf_size(limits.max_header_bytes.max(8192));
    builder
        .http2()
        .timer(TokioTimer::new())
        .max_concurrent_streams(limits.max_concurrent_streams)
        .max_header_list_size(u32::try_from(limits.max_header_bytes).unwrap_or(u32::MAX))
        .keep_alive_interval(Some(bounds.keepalive_interval))
        .keep_alive_timeout(bounds.keepalive_interval);
    builder
}

/// Ends the open connections of organisations that leave the policy, at each change.
async fn end_departed(
    policy: Arc<PolicyHandle>,
    connections: Vec<Arc<Connections>>,
    mut shutdown: watch::Receiver<bool>,
) {
    let mut installed = policy.watch();
    loop {
        tokio::select! {
            changed = installed.changed() => if changed.is_err() { return },
            _ = shutdown.changed() => return,
        }
        let snapshot = policy.current();
        let ended: usize = connections.iter().map(|c| c.recheck_orgs(|k| snapshot.organisation(k).is_some())).sum();
        if ended > 0 {
            tracing::info!(ended, "connections of organisations no longer in the policy ended");
        }
    }
}

/// Serves mutual-TLS connections on `listener` with `handle` until `shutdown` turns true, then
/// stops accepting and lets in-flight calls finish (up to [`SHUTDOWN_GRACE`]). The caller's
/// identity is read once per connection and handed to every request on it; each connection
/// lives within the listener's bounds and is registered for reloads to check again
/// ([`crate::conn`]).
async fn serve_mtls<F, Fut>(
    listener: TcpListener,
    listen: Listen,
    builder: auto::Builder<TokioExecutor>,
    mut shutdown: watch::Receiver<bool>,
    handle: F,
) where
    F: Fn(Request<Incoming>, Arc<Caller>) -> Fut + Clone + Send + Sync + 'static,
    Fut: Future<Output = Response<Body>> + Send + 'static,
{
    loop {
        let (tcp, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(a) => a,
                Err(e) => {
                    // EMFILE and friends: back off instead of spinning.
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            _ = shutdown.changed() => break,
        };
        let Some(mut slot) = listen.admit(peer) else { continue };
        let _ = tcp.set_nodelay(true);
        let handle = handle.clone();
        let builder = builder.clone();
        let listen = listen.clone();
        tokio::spawn(async move {
            let Some((tls, _open)) = listen.handshake(tcp, peer).await else { return };
            let chain = tls.get_ref().1.peer_certificates().unwrap_or_default();
            let caller = Caller::from_peer_chain(Some(chain), peer);
            let (org, not_after) = caller.identity.as_ref().map_or((None, None), |i| (Some(i.kbo), Some(i.not_after)));
            let state = slot.open(chain, org, not_after);
            let caller = Arc::new(caller.on(state.clone()));
            let svc = crate::conn::counted(state.clone(), move |req| handle(req, caller.clone()));
            let conn = builder.serve_connection(TokioIo::new(tls), svc).into_owned();
            if let Err(e) = crate::conn::drive(conn, &state).await {
                tracing::debug!(%peer, error = %e, "connection ended with an error");
            }
            drop(slot);
        });
    }
    drop(listener);
    listen.drained().await;
}
