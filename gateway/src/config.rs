//! Configuration: one TOML file, every key documented here, overridable from the environment.
//!
//! An environment variable `PASSERELLE__SECTION__KEY=value` overrides `[section] key` (nested
//! tables take more `__` segments; names are case-insensitive). The value is read as a TOML
//! value when it parses as one (`2048`, `true`, `["a","b"]`) and as a string otherwise.
//! `passerelle.example.toml` at the repository root documents a complete file and is parsed
//! by a test.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

/// Prefix of environment overrides.
pub const ENV_PREFIX: &str = "PASSERELLE__";

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config file {path}: {source}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("config file {path}: {message}")]
    Parse { path: PathBuf, message: String },
    #[error("environment override {var}: {message}")]
    Env { var: String, message: String },
    #[error("config: {0}")]
    Invalid(String),
}

/// Where a configuration was read from.
#[derive(Debug, Clone)]
pub struct Origin {
    pub path: PathBuf,
    pub overrides: Vec<(String, String)>,
}

/// The whole configuration.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// Where this configuration was read from and the `PASSERELLE__…` overrides applied, so a
    /// reload reads the same way (not a key of the file).
    #[serde(skip)]
    pub origin: Option<Origin>,
    /// The data-plane listener (recipients, mTLS with organisation certificates).
    #[serde(default)]
    pub data: DataListener,
    /// TLS material of the data plane.
    pub tls: TlsConfig,
    /// Limits applied to every data-plane request.
    #[serde(default)]
    pub limits: Limits,
    /// Persistence.
    #[serde(default)]
    pub store: StoreConfig,
    /// The legal instruments the data plane enforces.
    #[serde(default)]
    pub policy: PolicyConfig,
    /// The audit trail.
    #[serde(default)]
    pub audit: AuditConfig,
    /// The control plane (data owners, auditors, the citizen access point).
    #[serde(default)]
    pub control: ControlConfig,
    /// The operations listener: `/healthz`, `/readyz`, `/metrics`.
    #[serde(default)]
    pub ops: OpsConfig,
    /// The public listener: the association register's public subset, without a certificate.
    #[serde(default)]
    pub public: PublicConfig,
    /// What a client may hold open on each listener (`[connections.data]`, `.control`,
    /// `.public`, `.ops`): timeouts, maximum age, connections at once, per address.
    #[serde(default)]
    pub connections: crate::conn::ConnectionsConfig,
    /// Upstream sources by name (`sigedis`, `div`, …): where the gateway forwards to.
    #[serde(default)]
    pub sources: BTreeMap<String, SourceConfig>,
    /// Logging.
    #[serde(default)]
    pub log: LogConfig,
}

/// The data-plane listener.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DataListener {
    /// Address to listen on. Port 0 picks a free port (tests, demo).
    pub listen: SocketAddr,
}

impl Default for DataListener {
    fn default() -> Self {
        DataListener { listen: SocketAddr::from(([127, 0, 0, 1], 8443)) }
    }
}

/// TLS material. Paths are relative to the config file's directory.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TlsConfig {
    /// Server certificate chain (PEM), leaf first.
    pub cert: PathBuf,
    /// Server private key (PEM, PKCS#8, SEC1 or PKCS#1).
    pub key: PathBuf,
    /// CA bundle (PEM) that client certificates must chain to.
    pub client_ca: PathBuf,
    /// Certificate revocation lists (PEM) checked for every client certificate.
    #[serde(default)]
    pub crls: Vec<PathBuf>,
    /// Time allowed for a TLS handshake, in milliseconds.
    #[serde(default = "default_handshake_timeout_ms")]
    pub handshake_timeout_ms: u64,
    /// Most intermediate CA certificates a client may present between its certificate and a
    /// CA of `client_ca`; a longer chain is refused at the handshake, whatever the CAs' own
    /// path-length constraints allow. Organisation certificates in use have one.
    #[serde(default = "default_max_intermediates")]
    pub max_intermediates: usize,
}

fn default_max_intermediates() -> usize {
    2
}

fn default_handshake_timeout_ms() -> u64 {
    5_000
}

/// Limits of the data plane.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Limits {
    /// Largest request body accepted, in bytes; larger ones get 413 `BODY_TOO_LARGE`.
    pub max_body_bytes: usize,
    /// Largest header section accepted, in bytes (HTTP/1.1 read buffer, HTTP/2 header list).
    pub max_header_bytes: usize,
    /// Time allowed to receive the request headers, in milliseconds (slow-loris guard).
    pub header_read_timeout_ms: u64,
    /// Time allowed to receive the request body, in milliseconds.
    pub body_read_timeout_ms: u64,
    /// Requests processed at once across all connections; above it, 503 `OVERLOADED`.
    pub max_in_flight: usize,
    /// Concurrent HTTP/2 streams per connection.
    pub max_concurrent_streams: u32,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_body_bytes: 256 * 1024,
            max_header_bytes: 16 * 1024,
            header_read_timeout_ms: 5_000,
            body_read_timeout_ms: 10_000,
            max_in_flight: 4_096,
            max_concurrent_streams: 128,
        }
    }
}

impl Limits {
    pub fn header_read_timeout(&self) -> Duration {
        Duration::from_millis(self.header_read_timeout_ms)
    }
    pub fn body_read_timeout(&self) -> Duration {
        Duration::from_millis(self.body_read_timeout_ms)
    }
}

/// Where the policy bundles are.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct PolicyConfig {
    /// Bundle files, or directories whose `*.toml` files are all read (sorted by name).
    /// Relative to the config file's directory. With no bundle, every call is refused
    /// (`NO_LEGAL_BASIS`): the gateway denies by default. They are imported into the store at
    /// the first start and again when their content changes; otherwise the store's policy
    /// (with the control plane's changes) stays in force.
    pub bundles: Vec<PathBuf>,
}

/// The operations listener: plain HTTP, meant for loopback or an operations network only.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct OpsConfig {
    /// Address to listen on; absent disables it. Port 0 picks a free port.
    pub listen: Option<SocketAddr>,
}

impl Default for OpsConfig {
    fn default() -> Self {
        OpsConfig { listen: Some(SocketAddr::from(([127, 0, 0, 1], 9464))) }
    }
}

/// The public listener: HTTPS with the data plane's server certificate, no client certificate
/// asked; it serves only public data (the association register's public subset).
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct PublicConfig {
    /// Address to listen on; absent (the default) disables it. Port 0 picks a free port.
    pub listen: Option<SocketAddr>,
}

/// The control-plane listener: mTLS with the same TLS material as the data plane.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ControlConfig {
    /// Address to listen on; absent disables the control plane. Port 0 picks a free port.
    pub listen: Option<SocketAddr>,
    /// Enterprise numbers of the organisations whose certificates may query the audit trail
    /// (the designated persons of DOMAIN.md §7 act through them; each query is audited).
    pub auditors: Vec<String>,
    /// The gateway's own test or development CA, which signs registered organisations'
    /// certificate requests (`POST /organisations/{kbo}/certificates`); absent: it signs none.
    pub issuer: Option<IssuerConfig>,
    /// The hosts a registered source's upstream may name (`POST /sources` with `upstream`):
    /// exact host names or addresses, or `*.suffix` for every host under a domain. Empty (the
    /// default): no registered upstream at all, so a data owner cannot make the gateway reach
    /// a host its operator did not allow (the built-in sources' `[sources.*]` are not subject
    /// to it).
    pub upstream_hosts: Vec<String>,
}

impl ControlConfig {
    /// Whether a registered upstream may name `host`.
    pub fn upstream_host_allowed(&self, host: &str) -> bool {
        let host = host.trim_start_matches('[').trim_end_matches(']').to_ascii_lowercase();
        self.upstream_hosts.iter().any(|p| {
            let p = p.to_ascii_lowercase();
            match p.strip_prefix("*.") {
                Some(domain) => host.len() > domain.len() && host.ends_with(&format!(".{domain}")),
                None => host == p.trim_start_matches('[').trim_end_matches(']'),
            }
        })
    }
}

/// A CA the control plane signs organisations' requests with.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IssuerConfig {
    /// The CA's certificate (PEM); organisations' certificates chain to it, so it belongs in
    /// `tls.client_ca`.
    pub cert: PathBuf,
    /// Its private key (PEM).
    pub key: PathBuf,
    /// Validity of the certificates it signs, in days (1 to 825).
    #[serde(default = "issuer_days")]
    pub days: u32,
}

fn issuer_days() -> u32 {
    365
}

impl Default for ControlConfig {
    fn default() -> Self {
        ControlConfig {
            listen: Some(SocketAddr::from(([127, 0, 0, 1], 9443))),
            auditors: Vec::new(),
            issuer: None,
            upstream_hosts: Vec::new(),
        }
    }
}

/// The audit trail (docs/audit-format.md).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AuditConfig {
    /// Directory of the segment files and checkpoints.
    pub dir: PathBuf,
    /// PKCS#8 Ed25519 key signing the checkpoints (generated with its `.pub` beside it if
    /// missing). Keep it away from the trail's directory: whoever holds it can sign a forgery.
    pub signing_key: PathBuf,
    /// Size at which a new segment file starts, in bytes.
    pub segment_bytes: u64,
    /// A signed checkpoint every this many records…
    pub checkpoint_every: u64,
    /// …or this often (milliseconds) when records were written since the last one.
    pub checkpoint_interval_ms: u64,
    /// Most records made durable by one fdatasync.
    pub max_batch: usize,
    /// How long records are kept, in days (10 years by default); whole segments older than
    /// this are pruned by `passerelle audit prune`.
    pub retention_days: u32,
}

impl Default for AuditConfig {
    fn default() -> Self {
        AuditConfig {
            dir: PathBuf::from("var/audit"),
            signing_key: PathBuf::from("var/keys/audit-signing.key"),
            segment_bytes: 64 * 1024 * 1024,
            checkpoint_every: 10_000,
            checkpoint_interval_ms: 5_000,
            max_batch: 4_096,
            retention_days: 3_653,
        }
    }
}

/// Which store backs the gateway.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct StoreConfig {
    /// `sled` (embedded, the default) or `postgres` (several replicas share one database).
    pub kind: StoreKind,
    /// Directory of the embedded store, relative to the config file's directory.
    pub path: PathBuf,
    /// Page cache of the embedded store, in MiB. The data plane never reads the store (consents
    /// and policies are served from memory), so a small cache costs only control-plane reads.
    pub cache_mb: u64,
    /// The PostgreSQL database (`postgres` only): a libpq URL or key=value string, e.g.
    /// `postgres://passerelle@db.internal:5432/passerelle`. Keep passwords out of the file:
    /// `PASSERELLE__STORE__URL` overrides it.
    pub url: Option<String>,
    /// This replica's name (`postgres` only): letters, digits, `-` and `_`, unique among the
    /// replicas sharing the database. It names the replica's own audit chain: its trail lives in
    /// `audit.dir/replica-<name>/` and its records are indexed under this name.
    pub replica: Option<String>,
    /// How long a store call may take before it fails (`postgres` only), ms.
    pub timeout_ms: u64,
    /// TLS to the database (`postgres` only): the CA its server certificate must chain to, and
    /// optionally the gateway's client certificate and key. When set, every connection is TLS
    /// (`sslmode=prefer` in the URL counts as `require`) and the server's name is verified.
    pub tls: Option<SourceTls>,
}

impl Default for StoreConfig {
    fn default() -> Self {
        StoreConfig {
            kind: StoreKind::Sled,
            path: PathBuf::from("var/store"),
            cache_mb: 128,
            url: None,
            replica: None,
            timeout_ms: 5_000,
            tls: None,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum StoreKind {
    Sled,
    Postgres,
}

/// One upstream source.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SourceConfig {
    /// Base URL of the source's production side, e.g. `http://127.0.0.1:18001`.
    pub upstream: String,
    /// Base URL of the source's test side (its sandbox), which answers calls from the test
    /// environment (certificates with `OU=INT` or `OU=ACC`) — and so conventions in their
    /// test phase. Without it, test-environment calls to this source are refused.
    #[serde(default)]
    pub test_upstream: Option<String>,
    /// Time allowed for the source to answer completely, in milliseconds.
    #[serde(default = "default_upstream_timeout_ms")]
    pub timeout_ms: u64,
    /// Largest answer accepted from the source, in bytes; larger ones are refused as
    /// `UPSTREAM_ANSWER_TOO_LARGE` and never forwarded (reading stops at the limit).
    #[serde(default = "default_max_response_bytes")]
    pub max_response_bytes: usize,
    /// Circuit breaker: after this many calls in a row that the source did not answer
    /// (refused or reset connection, timeout, 5xx), calls are refused at once with
    /// `UPSTREAM_CIRCUIT_OPEN` for `breaker_open_ms`, then one probe call decides. `0` turns
    /// the breaker off. The production and test sides have a breaker each.
    #[serde(default = "default_breaker_failures")]
    pub breaker_failures: u32,
    /// How long the circuit stays open before a probe call, in milliseconds.
    #[serde(default = "default_breaker_open_ms")]
    pub breaker_open_ms: u64,
    /// HTTPS towards the source: the CA that issued its server certificate and, when the
    /// source asks for one, the gateway's own client certificate. Without it, `https://`
    /// URLs are refused rather than trusted blindly.
    #[serde(default)]
    pub tls: Option<SourceTls>,
}

/// TLS towards one source. Paths are relative to the config file's directory.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SourceTls {
    /// PEM bundle of the CA(s) the source's server certificate must chain to.
    pub ca: PathBuf,
    /// The gateway's client certificate (PEM) presented to the source.
    #[serde(default)]
    pub cert: Option<PathBuf>,
    /// Its private key (PEM).
    #[serde(default)]
    pub key: Option<PathBuf>,
}

fn default_upstream_timeout_ms() -> u64 {
    5_000
}
fn default_max_response_bytes() -> usize {
    4 * 1024 * 1024
}
fn default_breaker_failures() -> u32 {
    5
}
fn default_breaker_open_ms() -> u64 {
    5_000
}

/// Logging.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LogConfig {
    /// `text` or `json`.
    pub format: LogFormat,
    /// A tracing filter, e.g. `info` or `gateway=debug,info`; `RUST_LOG` wins when set.
    pub filter: String,
}

impl Default for LogConfig {
    fn default() -> Self {
        LogConfig { format: LogFormat::Text, filter: "info".to_owned() }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    Text,
    Json,
}

impl Config {
    /// Reads `path`, applies the environment overrides from `env`, and resolves relative
    /// paths against the file's directory.
    pub fn load(path: &Path, env: impl IntoIterator<Item = (String, String)>) -> Result<Self, ConfigError> {
        let text =
            std::fs::read_to_string(path).map_err(|source| ConfigError::Read { path: path.to_owned(), source })?;
        let base = path.parent().unwrap_or(Path::new("."));
        let overrides: Vec<(String, String)> = env.into_iter().filter(|(k, _)| k.starts_with(ENV_PREFIX)).collect();
        let mut cfg = Self::from_toml(&text, base, overrides.clone()).map_err(|e| match e {
            ConfigError::Parse { message, .. } => ConfigError::Parse { path: path.to_owned(), message },
            other => other,
        })?;
        cfg.origin = Some(Origin { path: path.to_owned(), overrides });
        Ok(cfg)
    }

    /// Reads the configuration again from where it came from (a reload).
    pub fn reread(&self) -> Result<Self, ConfigError> {
        match &self.origin {
            Some(o) => Self::load(&o.path, o.overrides.clone()),
            None => Ok(self.clone()),
        }
    }

    /// Parses a configuration text; relative paths are resolved against `base`.
    pub fn from_toml(
        text: &str,
        base: &Path,
        env: impl IntoIterator<Item = (String, String)>,
    ) -> Result<Self, ConfigError> {
        let parse_err = |message: String| ConfigError::Parse { path: PathBuf::new(), message };
        let mut value: toml::Table = text.parse().map_err(|e: toml::de::Error| parse_err(e.to_string()))?;
        for (var, raw) in env {
            let Some(rest) = var.strip_prefix(ENV_PREFIX) else { continue };
            apply_override(&mut value, rest, &raw).map_err(|message| ConfigError::Env { var: var.clone(), message })?;
        }
        let mut cfg: Config =
            toml::Value::Table(value).try_into().map_err(|e: toml::de::Error| parse_err(e.to_string()))?;
        cfg.resolve_paths(base);
        cfg.validate()?;
        Ok(cfg)
    }

    fn resolve_paths(&mut self, base: &Path) {
        let fix = |p: &mut PathBuf| {
            if p.is_relative() {
                *p = base.join(&*p);
            }
        };
        fix(&mut self.tls.cert);
        fix(&mut self.tls.key);
        fix(&mut self.tls.client_ca);
        self.tls.crls.iter_mut().for_each(fix);
        fix(&mut self.store.path);
        self.policy.bundles.iter_mut().for_each(fix);
        fix(&mut self.audit.dir);
        fix(&mut self.audit.signing_key);
        if let Some(i) = self.control.issuer.as_mut() {
            fix(&mut i.cert);
            fix(&mut i.key);
        }
        if let Some(t) = self.store.tls.as_mut() {
            fix(&mut t.ca);
            t.cert.iter_mut().chain(t.key.iter_mut()).for_each(fix);
        }
        // Each replica of a shared store writes its own chain, in its own directory.
        if let (StoreKind::Postgres, Some(r)) = (self.store.kind, &self.store.replica) {
            self.audit.dir = self.audit.dir.join(format!("replica-{r}"));
        }
        for t in self.sources.values_mut().filter_map(|s| s.tls.as_mut()) {
            fix(&mut t.ca);
            t.cert.iter_mut().chain(t.key.iter_mut()).for_each(fix);
        }
    }

    fn validate(&self) -> Result<(), ConfigError> {
        if self.audit.max_batch == 0 || self.audit.checkpoint_every == 0 {
            return Err(ConfigError::Invalid("audit.max_batch and audit.checkpoint_every must be at least 1".into()));
        }
        let c = &self.connections;
        for (name, b) in [("data", &c.data), ("control", &c.control), ("public", &c.public), ("ops", &c.ops)] {
            crate::conn::Bounds::of(name, b).check(name).map_err(ConfigError::Invalid)?;
        }
        if self.control.issuer.as_ref().is_some_and(|i| !(1..=825).contains(&i.days)) {
            return Err(ConfigError::Invalid("control.issuer.days must be between 1 and 825".into()));
        }
        for (i, a) in self.control.auditors.iter().enumerate() {
            policies::ids::Kbo::parse(a)
                .map_err(|e| ConfigError::Invalid(format!("control.auditors[{i}] is not an enterprise number: {e}")))?;
        }
        if self.store.kind == StoreKind::Postgres {
            if self.store.url.as_deref().is_none_or(str::is_empty) {
                return Err(ConfigError::Invalid("store.kind = \"postgres\" needs store.url".into()));
            }
            let ok = |r: &str| {
                !r.is_empty() && r.len() <= 64 && r.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
            };
            match self.store.replica.as_deref() {
                Some(r) if ok(r) => {}
                Some(_) => {
                    return Err(ConfigError::Invalid("store.replica: 1 to 64 letters, digits, '-' or '_'".into()));
                }
                None => return Err(ConfigError::Invalid("store.kind = \"postgres\" needs store.replica".into())),
            }
        }
        if self.limits.max_in_flight == 0 {
            return Err(ConfigError::Invalid("limits.max_in_flight must be at least 1".into()));
        }
        for (name, s) in &self.sources {
            for (key, url) in [("upstream", Some(&s.upstream)), ("test_upstream", s.test_upstream.as_ref())] {
                let Some(url) = url else { continue };
                let uri: http::Uri =
                    url.parse().map_err(|e| ConfigError::Invalid(format!("sources.{name}.{key} is not a URL: {e}")))?;
                match (uri.scheme_str(), uri.authority()) {
                    (Some("http"), Some(_)) => {}
                    (Some("https"), Some(_)) if s.tls.is_some() => {}
                    (Some("https"), Some(_)) => {
                        return Err(ConfigError::Invalid(format!(
                            "sources.{name}.{key} is https:// but sources.{name}.tls (at least the source's CA) is not set"
                        )));
                    }
                    _ => {
                        return Err(ConfigError::Invalid(format!(
                            "sources.{name}.{key} must be an absolute http:// or https:// URL"
                        )));
                    }
                }
            }
        }
        Ok(())
    }
}

/// Sets `a__b__c = raw` in `table`, creating intermediate tables.
fn apply_override(table: &mut toml::Table, path: &str, raw: &str) -> Result<(), String> {
    let keys: Vec<String> = path.split("__").map(str::to_ascii_lowercase).collect();
    if keys.iter().any(String::is_empty) {
        return Err("empty key segment".into());
    }
    let value = parse_env_value(raw);
    let (last, parents) = keys.split_last().ok_or("empty key")?;
    let mut cur = table;
    for k in parents {
        let entry = cur.entry(k.clone()).or_insert_with(|| toml::Value::Table(toml::Table::new()));
        cur = entry.as_table_mut().ok_or_else(|| format!("'{k}' is not a table"))?;
    }
    cur.insert(last.clone(), value);
    Ok(())
}

fn parse_env_value(raw: &str) -> toml::Value {
    let probe = format!("v = {raw}");
    match probe.parse::<toml::Table>() {
        Ok(mut t) => t.remove("v").unwrap_or_else(|| toml::Value::String(raw.to_owned())),
        Err(_) => toml::Value::String(raw.to_owned()),
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    const MIN: &str = r#"
        [tls]
        cert = "pki/server.pem"
        key = "pki/server.key"
        client_ca = "pki/ca.pem"
    "#;

    #[test]
    fn example_config_parses() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../passerelle.example.toml");
        let cfg = Config::load(&path, []).unwrap();
        assert!(cfg.sources.contains_key("sigedis"));
        assert_eq!(cfg.limits.max_body_bytes, 262_144);
    }

    #[test]
    fn env_overrides_win_and_paths_resolve() {
        let env = [
            ("PASSERELLE__LIMITS__MAX_BODY_BYTES".to_owned(), "2048".to_owned()),
            ("PASSERELLE__DATA__LISTEN".to_owned(), "127.0.0.1:0".to_owned()),
            ("PASSERELLE__SOURCES__X__UPSTREAM".to_owned(), "http://127.0.0.1:1".to_owned()),
            ("OTHER".to_owned(), "ignored".to_owned()),
        ];
        let cfg = Config::from_toml(MIN, Path::new("/etc/p"), env).unwrap();
        assert_eq!(cfg.limits.max_body_bytes, 2048);
        assert_eq!(cfg.data.listen.port(), 0);
        assert_eq!(cfg.tls.cert, Path::new("/etc/p/pki/server.pem"));
        assert_eq!(cfg.sources["x"].timeout_ms, 5_000);
    }

    #[test]
    fn unknown_keys_and_bad_urls_are_refused() {
        let e = Config::from_toml(&format!("{MIN}\n[limits]\nmax_bodyy = 1\n"), Path::new("."), []).unwrap_err();
        assert!(e.to_string().contains("max_bodyy"), "{e}");
        let e = Config::from_toml(&format!("{MIN}\n[sources.a]\nupstream = \"ftp://x\"\n"), Path::new("."), [])
            .unwrap_err();
        assert!(e.to_string().contains("sources.a.upstream"), "{e}");
    }
}
