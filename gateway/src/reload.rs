//! Live reload, on SIGHUP or `POST /reload` on the control plane: the configuration file is
//! read again and its TLS material (server certificate and key, client CA bundle, CRLs) and
//! policy bundles are applied without dropping a call.
//!
//! Everything is built first and swapped only when all of it is good: a broken certificate
//! file leaves the gateway running on what it had, and the reload reports why. The TLS
//! configurations sit behind `arc-swap`; each new connection takes the one in force when it is
//! accepted, and connections already open keep theirs. The bundles are read and validated by
//! [`Changes::read_bundles`] with the TLS material, and imported only if they changed. Other
//! settings (listen addresses, limits, store, audit, sources) take effect at the next start.
//!
//! Connections already open keep their TLS session, but not their right to it: once the new
//! material is in force, every open mutual-TLS connection's certificate chain is verified
//! again against it ([`crate::conn::Connections::recheck`]), and those now revoked (or no longer
//! chaining to a trusted CA) are ended — their calls in flight answered, the next one refused
//! with `CLIENT_CERT_REVOKED`.

use std::sync::Arc;

use anyhow::Context as _;
use arc_swap::ArcSwap;
use rustls::ServerConfig;
use rustls::server::danger::ClientCertVerifier;
use serde::Serialize;

use crate::config::Config;
use crate::metrics::Metrics;
use crate::policy::Changes;
use crate::tls;

/// The TLS material of the listeners.
#[derive(Debug)]
pub struct TlsMaterial {
    /// The data plane's and control plane's (client certificate required).
    pub mtls: ServerConfig,
    /// The verifier of `mtls`, to check open connections again.
    pub verifier: Arc<dyn ClientCertVerifier>,
    /// The public listener's.
    pub public: ServerConfig,
}

/// What a reload applied.
#[derive(Debug, Clone, Serialize)]
pub struct Reloaded {
    /// The TLS material was read and swapped in.
    pub tls: bool,
    /// Open connections ended because their certificate no longer holds.
    pub connections_ended: usize,
    /// The policy version in force after the reload.
    pub policy_version: u64,
    /// The bundles had changed and were imported.
    pub policy_imported: bool,
}

/// Holds what a reload swaps.
#[derive(Debug)]
pub struct Reloader {
    /// The data plane's and control plane's server configuration (client certificate required).
    pub mtls: Arc<ArcSwap<ServerConfig>>,
    /// The public listener's (no client certificate).
    pub public: Arc<ArcSwap<ServerConfig>>,
    /// The open mutual-TLS connections (data and control planes).
    pub connections: Vec<Arc<crate::conn::Connections>>,
    changes: Arc<Changes>,
    metrics: Metrics,
    config: std::sync::Mutex<Config>,
    lock: tokio::sync::Mutex<()>,
}

impl Reloader {
    /// Reads the TLS material of `cfg`: before anything else is opened, so that a config that
    /// cannot serve creates nothing.
    pub fn tls(cfg: &Config) -> anyhow::Result<TlsMaterial> {
        let (mtls, verifier) = tls::server_config_and_verifier(&cfg.tls).context("data-plane TLS")?;
        Ok(TlsMaterial { mtls, verifier, public: tls::public_server_config(&cfg.tls).context("public TLS")? })
    }

    pub fn new(
        cfg: &Config,
        tls: TlsMaterial,
        connections: Vec<Arc<crate::conn::Connections>>,
        changes: Arc<Changes>,
        metrics: Metrics,
    ) -> Self {
        Reloader {
            mtls: Arc::new(ArcSwap::from_pointee(tls.mtls)),
            public: Arc::new(ArcSwap::from_pointee(tls.public)),
            connections,
            changes,
            metrics,
            config: std::sync::Mutex::new(cfg.clone()),
            lock: tokio::sync::Mutex::new(()),
        }
    }

    /// Reads the configuration again and applies what can be applied live.
    pub async fn reload(&self) -> anyhow::Result<Reloaded> {
        let _one_at_a_time = self.lock.lock().await;
        let result = self.apply().await;
        let outcome = if result.is_ok() { "ok" } else { "failed" };
        self.metrics.reloads.with_label_values(&[outcome]).inc();
        match &result {
            Ok(r) => tracing::info!(policy_version = r.policy_version, imported = r.policy_imported, "reloaded"),
            Err(e) => tracing::error!(error = format!("{e:#}"), "reload failed; the gateway keeps what it had"),
        }
        result
    }

    async fn apply(&self) -> anyhow::Result<Reloaded> {
        let current = self.config.lock().map_err(|_| anyhow::anyhow!("config lock poisoned"))?.clone();
        let cfg = current.reread().context("configuration")?;
        let TlsMaterial { mtls, verifier, public } = Self::tls(&cfg)?;
        // The bundles are read and validated before anything is swapped, so that a bad bundle
        // changes nothing.
        let bundles = self.changes.read_bundles(&cfg.policy).await?;
        self.mtls.store(Arc::new(mtls));
        self.public.store(Arc::new(public));
        // New handshakes use the new material from here; open connections are checked now.
        let policy = self.changes.handle.clone();
        let connections_ended = self
            .connections
            .iter()
            .map(|c| c.recheck(verifier.as_ref(), |k| policy.current().organisation(k).is_some()))
            .sum();
        let imported = match bundles {
            Some(b) => Some(self.changes.import_bundles(b).await?),
            None => None,
        };
        if let Ok(mut c) = self.config.lock() {
            *c = cfg;
        }
        Ok(Reloaded {
            tls: true,
            connections_ended,
            policy_version: self.changes.handle.version(),
            policy_imported: imported.is_some(),
        })
    }
}
