//! `passerelle demo`: a complete gateway on loopback with no set-up — a generated dev PKI, the
//! embedded store, sandbox sources and the data plane — plus the calls that show it working.
//!
//! The integration tests start the same [`Demo`] (on port 0, in a temporary directory), so
//! what the README promises is what the tests exercise.

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::Context as _;
use bytes::Bytes;
use certs::{ClientSpec, DevClient, DevPki, DevPkiPaths};
use http::Method;
use policies::ids::{Kbo, Niss};

use crate::client::{self, Answer, HttpVersion, MtlsClient};
use crate::config::Config;
use crate::server::{self, RunningGateway};

/// Legal basis and purpose the demo's Sigedis calls carry.
pub const SIGEDIS_LEGAL_BASIS: &str = "CSI/SSH/19/004";
pub const SIGEDIS_PURPOSE: &str = "SUPPLEMENTARY_PENSION_INFO";

/// The demo's organisations: (file name, display name, first 8 digits of the enterprise
/// number). Enterprise numbers are synthetic but valid.
pub const ORGANISATIONS: &[(&str, &str, u32)] = &[
    ("bank", "Demo Bank", 4_030_192),
    ("insurer", "Demo Insurer", 4_287_594),
    ("leasing", "Demo Leasing", 8_765_432),
    ("admin", "Passerelle operator", 1_234_567),
];

/// A client certificate the demo's CRL revokes.
pub const REVOKED: &str = "revoked";

/// Where and how to run the demo.
#[derive(Debug, Clone)]
pub struct DemoOptions {
    /// Working directory (PKI, store, config).
    pub dir: PathBuf,
    /// Data-plane port; 0 picks a free one.
    pub port: u16,
    /// More client certificates to issue (tests add faulty ones).
    pub extra_clients: Vec<DevClient>,
    /// Config overrides, as `PASSERELLE__…` environment pairs.
    pub overrides: Vec<(String, String)>,
}

impl DemoOptions {
    pub fn new(dir: impl Into<PathBuf>, port: u16) -> Self {
        DemoOptions { dir: dir.into(), port, extra_clients: Vec::new(), overrides: Vec::new() }
    }
}

/// A running demo.
#[derive(Debug)]
pub struct Demo {
    pub dir: PathBuf,
    pub pki: DevPki,
    pub paths: DevPkiPaths,
    pub config_path: PathBuf,
    pub config: Config,
    pub gateway: RunningGateway,
    pub sandboxes: Vec<(&'static str, adapters::sandbox::SandboxServer)>,
}

/// The demo's organisation `name`'s enterprise number.
pub fn org_kbo(name: &str) -> Option<Kbo> {
    ORGANISATIONS.iter().find(|(n, _, _)| *n == name).and_then(|(_, _, f)| Kbo::from_first8(*f))
}

fn dev_clients() -> Vec<DevClient> {
    let mut v: Vec<DevClient> = ORGANISATIONS
        .iter()
        .filter_map(|(name, display, first8)| {
            Some(DevClient {
                name: (*name).to_owned(),
                spec: ClientSpec::org(display, Kbo::from_first8(*first8)?),
                revoked: false,
            })
        })
        .collect();
    if let Some(k) = org_kbo("bank") {
        v.push(DevClient { name: REVOKED.to_owned(), spec: ClientSpec::org("Demo Bank (revoked)", k), revoked: true });
    }
    v
}

/// Generates the dev PKI the demo uses into `dir` (what `passerelle certs init` writes).
pub fn init_pki(dir: &Path, extra: &[DevClient]) -> anyhow::Result<(DevPki, DevPkiPaths)> {
    let mut clients = dev_clients();
    clients.extend_from_slice(extra);
    let pki = DevPki::generate(&clients)?;
    let paths = pki.write(dir)?;
    Ok((pki, paths))
}

/// A known person in the Sigedis sandbox.
pub fn sigedis_person() -> Option<Niss> {
    adapters::sigedis::sandbox::Register::persons().first().copied()
}

impl Demo {
    /// Generates everything under `opts.dir` and starts sandboxes and gateway.
    pub async fn start(opts: DemoOptions) -> anyhow::Result<Demo> {
        let dir = opts.dir;
        std::fs::create_dir_all(&dir).with_context(|| format!("cannot create {}", dir.display()))?;
        let (pki, paths) = init_pki(&dir.join("pki"), &opts.extra_clients)?;

        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let sigedis = adapters::sigedis::sandbox::serve(listener)?;

        let config_path = dir.join("passerelle.toml");
        let text = format!(
            r#"# Written by `passerelle demo`; paths are relative to this file.
[data]
listen = "127.0.0.1:{port}"

[tls]
cert = "pki/server.pem"
key = "pki/server.key"
client_ca = "pki/ca.pem"
crls = ["pki/crl.pem"]

[store]
path = "store"

[sources.sigedis]
upstream = "{sigedis}"
"#,
            port = opts.port,
            sigedis = sigedis.url(),
        );
        std::fs::write(&config_path, text).with_context(|| format!("cannot write {}", config_path.display()))?;
        let config = Config::load(&config_path, opts.overrides)?;
        let gateway = server::start(&config).await.with_context(|| {
            format!("cannot start the gateway (is port {} free? choose another with --port)", opts.port)
        })?;
        Ok(Demo { dir, pki, paths, config_path, config, gateway, sandboxes: vec![("sigedis", sigedis)] })
    }

    /// A client presenting the demo certificate `name`.
    pub fn client(&self, name: &str, version: HttpVersion) -> anyhow::Result<MtlsClient> {
        let issued = self.pki.client(name).with_context(|| format!("no demo client certificate {name}"))?;
        MtlsClient::new(
            self.gateway.data_addr,
            self.pki.ca.cert_pem().as_bytes(),
            Some((issued.cert_pem.as_bytes(), issued.key_pem.as_bytes())),
            version,
        )
    }

    /// Copy-paste `curl` commands that go through the gateway.
    pub fn curl_commands(&self) -> Vec<String> {
        let pki = &self.paths;
        let port = self.gateway.data_addr.port();
        let mut digits = [0u8; 11];
        let person = sigedis_person().map(|p| p.digits(&mut digits).to_owned()).unwrap_or_default();
        let tls = format!(
            "--cacert {} --cert {} --key {}",
            pki.ca_cert().display(),
            pki.client_cert("bank").display(),
            pki.client_key("bank").display()
        );
        vec![
            format!(
                "curl -sS {tls} -H 'X-Legal-Basis: {SIGEDIS_LEGAL_BASIS}' -H 'X-Purpose: {SIGEDIS_PURPOSE}' \
                 -H 'X-Subject: {person}' https://localhost:{port}/sigedis/pensions"
            ),
            format!(
                "curl -sS {tls} -H 'X-Legal-Basis: {SIGEDIS_LEGAL_BASIS}' -H 'X-Purpose: {SIGEDIS_PURPOSE}' \
                 -H 'X-Subject: 85073003329' https://localhost:{port}/sigedis/pensions   # refused: SUBJECT_INVALID"
            ),
        ]
    }

    /// Runs the demo's calls over real TLS and checks each outcome.
    pub async fn smoke(&self) -> anyhow::Result<Vec<Check>> {
        let mut checks = Vec::new();
        let mut digits = [0u8; 11];
        let person = sigedis_person().context("sandbox has no person")?;
        let person = person.digits(&mut digits).to_owned();
        let envelope = |subject: &str| -> Vec<(&'static str, String)> {
            vec![
                ("x-legal-basis", SIGEDIS_LEGAL_BASIS.to_owned()),
                ("x-purpose", SIGEDIS_PURPOSE.to_owned()),
                ("x-subject", subject.to_owned()),
            ]
        };
        for version in [HttpVersion::Http1, HttpVersion::Http2] {
            let bank = self.client("bank", version)?;
            let got = sigedis_call(&bank, &envelope(&person)).await;
            checks.push(Check::new(
                format!("bank reads supplementary pensions ({version:?})"),
                "200 with plans",
                got.map(|a| {
                    let plans = a.json().ok().and_then(|v| v["plans"].as_array().map(Vec::len)).unwrap_or(0);
                    (a.status == 200 && plans > 0, format!("{} with {plans} plans", a.status))
                }),
            ));
        }
        let bank = self.client("bank", HttpVersion::Http1)?;
        let got = sigedis_call(&bank, &envelope("85073003329")).await;
        checks.push(Check::refusal("invalid NISS is refused", "400 SUBJECT_INVALID", got, 400, "SUBJECT_INVALID"));
        let got = sigedis_call(&bank, &[("x-purpose", SIGEDIS_PURPOSE.to_owned())]).await;
        checks.push(Check::refusal(
            "missing legal basis is refused",
            "400 ENVELOPE_INVALID",
            got,
            400,
            "ENVELOPE_INVALID",
        ));

        // A certificate of another CA, carrying the bank's own enterprise number.
        let mut rogue = certs::Ca::generate("Rogue CA")?;
        let kbo = org_kbo("bank").context("bank")?;
        let issued = rogue.issue_client(&ClientSpec::org("Rogue", kbo))?;
        let rogue_client = MtlsClient::new(
            self.gateway.data_addr,
            self.pki.ca.cert_pem().as_bytes(),
            Some((issued.cert_pem.as_bytes(), issued.key_pem.as_bytes())),
            HttpVersion::Http1,
        )?;
        let got = sigedis_call(&rogue_client, &envelope(&person)).await;
        checks.push(Check::handshake_refused("certificate from another CA is refused", got));
        let revoked = self.client(REVOKED, HttpVersion::Http1)?;
        let got = sigedis_call(&revoked, &envelope(&person)).await;
        checks.push(Check::handshake_refused("revoked certificate is refused", got));
        Ok(checks)
    }
}

async fn sigedis_call(client: &MtlsClient, headers: &[(&'static str, String)]) -> anyhow::Result<Answer> {
    let h: Vec<(&str, &str)> = headers.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let req = client::request(Method::GET, "/sigedis/pensions", &h, Bytes::new())?;
    tokio::time::timeout(Duration::from_secs(10), client.send(req)).await.context("call timed out")?
}

/// One expected outcome of the smoke run.
#[derive(Debug)]
pub struct Check {
    pub name: String,
    pub expected: &'static str,
    pub got: String,
    pub ok: bool,
}

impl Check {
    fn new(name: String, expected: &'static str, got: anyhow::Result<(bool, String)>) -> Self {
        match got {
            Ok((ok, got)) => Check { name, expected, got, ok },
            Err(e) => Check { name, expected, got: format!("error: {e:#}"), ok: false },
        }
    }

    fn refusal(name: &str, expected: &'static str, got: anyhow::Result<Answer>, status: u16, code: &str) -> Self {
        Check::new(
            name.to_owned(),
            expected,
            got.map(|a| {
                (a.status == status && a.code() == Some(code), format!("{} {}", a.status, a.code().unwrap_or("-")))
            }),
        )
    }

    fn handshake_refused(name: &str, got: anyhow::Result<Answer>) -> Self {
        let (ok, got) = match got {
            Ok(a) => (false, format!("answered {}", a.status)),
            Err(e) => (true, format!("refused ({})", e.root_cause())),
        };
        Check { name: name.to_owned(), expected: "TLS handshake refused", got, ok }
    }
}

/// Prints the smoke report; returns whether every check passed.
pub fn print_report(checks: &[Check]) -> bool {
    let width = checks.iter().map(|c| c.name.len()).max().unwrap_or(0);
    for c in checks {
        println!("{} {:width$}  expected {:<22} got {}", if c.ok { "PASS" } else { "FAIL" }, c.name, c.expected, c.got);
    }
    let passed = checks.iter().filter(|c| c.ok).count();
    println!("smoke: {passed} passed, {} failed", checks.len() - passed);
    passed == checks.len()
}
