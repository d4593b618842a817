//! `passerelle demo`: a complete gateway on loopback with no set-up — a generated dev PKI, the
//! embedded store, sandbox sources and the data plane — plus the calls that show it working.
//!
//! The integration tests start the same [`Demo`] (on port 0, in a temporary directory), so
//! what the README promises is what the tests exercise.

mod open_flows;

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::Context as _;
use bytes::Bytes;
use certs::{ClientSpec, DevClient, DevPki, DevPkiPaths};
use http::Method;
use policies::Snapshot;
use policies::ids::{Kbo, Niss, VCode};

use crate::client::{self, Answer, HttpVersion, MtlsClient};
use crate::config::Config;
use crate::server::{self, RunningGateway};

/// The association register call that the demo shows succeeding (protocol VL/PROT/2022/017).
pub const ASSOC_LEGAL_BASIS: &str = "VL/PROT/2022/017";
pub const ASSOC_PURPOSE: &str = "SUBSIDY_HANDLING";
pub const ASSOC_CALLER: &str = "agency-a";
/// The Sigedis datatransfer (special authorization under 19/004; consent-based).
pub const SIGEDIS_LEGAL_BASIS: &str = "CSI/SSH/19/004/FI";
pub const SIGEDIS_PURPOSE: &str = "SUPPLEMENTARY_PENSION_INFO";
pub const SIGEDIS_CALLER: &str = "bank-a";

/// A client certificate the demo's CRL revokes (a copy of agency A's identity).
pub const REVOKED: &str = "revoked";

/// Where and how to run the demo.
#[derive(Debug, Clone)]
pub struct DemoOptions {
    /// Working directory (PKI, store, config).
    pub dir: PathBuf,
    /// Data-plane port; 0 picks a free one (and, unless given, for every other listener too).
    pub port: u16,
    /// The control plane's, operations listener's and public listener's ports; absent: 9443,
    /// 9464 and 8444, or free ones when `port` is 0.
    pub control_port: Option<u16>,
    pub ops_port: Option<u16>,
    pub public_port: Option<u16>,
    /// More client certificates to issue (tests add faulty ones).
    pub extra_clients: Vec<DevClient>,
    /// Config overrides, as `PASSERELLE__…` environment pairs.
    pub overrides: Vec<(String, String)>,
    /// Rewrites a seed bundle (file name, text) before it is written (tests vary the policy).
    pub bundle_edit: Option<fn(&str, String) -> String>,
}

impl DemoOptions {
    pub fn new(dir: impl Into<PathBuf>, port: u16) -> Self {
        DemoOptions {
            dir: dir.into(),
            port,
            control_port: None,
            ops_port: None,
            public_port: None,
            extra_clients: Vec::new(),
            overrides: Vec::new(),
            bundle_edit: None,
        }
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

/// The seed policy the demo enforces, loaded and compiled once per process.
pub fn seed_snapshot() -> anyhow::Result<&'static Snapshot> {
    static SEED: std::sync::OnceLock<Result<Snapshot, String>> = std::sync::OnceLock::new();
    SEED.get_or_init(|| {
        policies::bundle::load_texts(policies::seed::BUNDLES.iter().copied())
            .map(|p| Snapshot::compile(&p, 1))
            .map_err(|e| e.to_string())
    })
    .as_ref()
    .map_err(|e| anyhow::anyhow!("the seed bundles do not load: {e}"))
}

/// The enterprise number of the seed organisation with this handle.
pub fn org_kbo(handle: &str) -> Option<Kbo> {
    let snap = seed_snapshot().ok()?;
    snap.organisations().iter().find(|o| o.handle.as_deref() == Some(handle)).map(|o| o.kbo)
}

/// One client certificate per seed organisation that has a handle, and a revoked one.
fn dev_clients() -> anyhow::Result<Vec<DevClient>> {
    let snap = seed_snapshot()?;
    let mut v: Vec<DevClient> = snap
        .organisations()
        .iter()
        .filter_map(|o| {
            let handle = o.handle.as_deref()?;
            Some(DevClient { name: handle.to_owned(), spec: ClientSpec::org(&o.name, o.kbo), revoked: false })
        })
        .collect();
    let kbo = org_kbo(ASSOC_CALLER).context("the seed policy has agency A")?;
    v.push(DevClient { name: REVOKED.to_owned(), spec: ClientSpec::org("Agency A (revoked)", kbo), revoked: true });
    Ok(v)
}

/// Generates the dev PKI the demo uses into `dir` (what `passerelle certs init` writes).
pub fn init_pki(dir: &Path, extra: &[DevClient]) -> anyhow::Result<(DevPki, DevPkiPaths)> {
    let mut clients = dev_clients()?;
    clients.extend_from_slice(extra);
    let pki = DevPki::generate(&clients)?;
    let paths = pki.write(dir)?;
    // The audit trail's checkpoint signing key, with its public key beside it.
    let key = dir.join("audit-signing.key");
    if !key.exists() {
        crate::audit::trail::load_or_create_key(&key).map_err(anyhow::Error::msg)?;
    }
    Ok((pki, paths))
}

/// The config of a gateway on loopback over a dev PKI in `pki/`, the seed bundles in `bundles/`,
/// the store and trail beside them, and the given sources, each answering both the production
/// and the test side (a sandbox). The demo and the tests that run the binary use it.
pub fn site_config(
    data_port: u16,
    control_port: u16,
    ops_port: u16,
    public_port: u16,
    sources: &[(&str, String)],
    checkpoint_ms: u64,
) -> String {
    let auditor = org_kbo("admin").map(|k| {
        let mut d = [0u8; 10];
        k.digits(&mut d).to_owned()
    });
    let mut text = format!(
        r#"# Paths are relative to this file.
[data]
listen = "127.0.0.1:{data_port}"

[tls]
cert = "pki/server.pem"
key = "pki/server.key"
client_ca = "pki/ca.pem"
crls = ["pki/crl.pem"]

[store]
path = "store"

[audit]
dir = "audit"
signing_key = "pki/audit-signing.key"
checkpoint_interval_ms = {checkpoint_ms}

[control]
listen = "127.0.0.1:{control_port}"
auditors = ["{auditor}"]
# The dev CA signs registered organisations' certificate requests.
issuer = {{ cert = "pki/ca.pem", key = "pki/ca.key" }}
# Registered sources' upstreams may be on this host only (the demo's sandboxes).
upstream_hosts = ["127.0.0.1", "localhost"]

[ops]
listen = "127.0.0.1:{ops_port}"

[public]
listen = "127.0.0.1:{public_port}"

[policy]
bundles = ["bundles"]
"#,
        auditor = auditor.unwrap_or_default(),
    );
    for (name, url) in sources {
        text.push_str(&format!("\n[sources.{name}]\nupstream = \"{url}\"\ntest_upstream = \"{url}\"\n"));
    }
    text
}

/// Refuses, naming the listener, a configuration whose ports are taken (port 0 picks a free
/// one and is always fine).
fn check_ports_free(cfg: &Config) -> anyhow::Result<()> {
    let listeners = [
        ("the data plane", Some(cfg.data.listen), "--port or PASSERELLE__DATA__LISTEN"),
        ("the control plane", cfg.control.listen, "--control-port or PASSERELLE__CONTROL__LISTEN"),
        ("the operations listener", cfg.ops.listen, "--ops-port or PASSERELLE__OPS__LISTEN"),
        ("the public listener", cfg.public.listen, "--public-port or PASSERELLE__PUBLIC__LISTEN"),
    ];
    for (what, addr, how) in listeners {
        let Some(addr) = addr.filter(|a| a.port() != 0) else { continue };
        if let Err(e) = std::net::TcpListener::bind(addr) {
            anyhow::bail!(
                "port {} ({what}, {addr}) is not free ({e}); choose another with {how}; nothing was written",
                addr.port()
            );
        }
    }
    Ok(())
}

/// A known person in the Sigedis sandbox.
pub fn sigedis_person() -> Option<Niss> {
    adapters::sigedis::sandbox::Register::persons().first().copied()
}

/// A known association in the association register sandbox.
pub fn association() -> Option<VCode> {
    adapters::associations::sandbox::Register::vcodes(1).first().copied()
}

impl Demo {
    /// Generates everything under `opts.dir` and starts sandboxes and gateway.
    pub async fn start(opts: DemoOptions) -> anyhow::Result<Demo> {
        let dir = opts.dir;
        let mut sandboxes = Vec::new();
        for (name, serve) in SANDBOXES {
            sandboxes.push((*name, serve(tokio::net::TcpListener::bind("127.0.0.1:0").await?)?));
        }
        // The configuration first, in memory with the overrides: every port it asks for must be
        // free before anything is written under `dir`.
        let sources: Vec<(&str, String)> = sandboxes.iter().map(|(n, s)| (*n, s.url())).collect();
        // SPF Finances' cadastre is not in the configuration: its data owner registers it
        // through the control plane (the smoke run does).
        sandboxes.push(("cadastre", adapters::cadastre::serve(tokio::net::TcpListener::bind("127.0.0.1:0").await?)?));
        let defaults = if opts.port == 0 { (0, 0, 0) } else { (9443, 9464, 8444) };
        let (control, ops, public) = (
            opts.control_port.unwrap_or(defaults.0),
            opts.ops_port.unwrap_or(defaults.1),
            opts.public_port.unwrap_or(defaults.2),
        );
        let text = site_config(opts.port, control, ops, public, &sources, 1000);
        let planned = Config::from_toml(&text, &dir, opts.overrides.clone())?;
        check_ports_free(&planned)?;

        std::fs::create_dir_all(&dir).with_context(|| format!("cannot create {}", dir.display()))?;
        let (pki, paths) = init_pki(&dir.join("pki"), &opts.extra_clients)?;
        let bundles = dir.join("bundles");
        std::fs::create_dir_all(&bundles)?;
        for (name, text) in policies::seed::BUNDLES {
            let text = match opts.bundle_edit {
                Some(edit) => edit(name, (*text).to_owned()),
                None => (*text).to_owned(),
            };
            std::fs::write(bundles.join(name), text)?;
        }
        let config_path = dir.join("passerelle.toml");
        std::fs::write(&config_path, text).with_context(|| format!("cannot write {}", config_path.display()))?;
        let config = Config::load(&config_path, opts.overrides)?;
        let gateway = server::start(&config).await.context("cannot start the gateway")?;
        Ok(Demo { dir, pki, paths, config_path, config, gateway, sandboxes })
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

    /// A control-plane client presenting the demo certificate `name`.
    pub fn control_client(&self, name: &str) -> anyhow::Result<MtlsClient> {
        let issued = self.pki.client(name).with_context(|| format!("no demo client certificate {name}"))?;
        let addr = self.gateway.control_addr.context("the control plane is off")?;
        MtlsClient::new(
            addr,
            self.pki.ca.cert_pem().as_bytes(),
            Some((issued.cert_pem.as_bytes(), issued.key_pem.as_bytes())),
            HttpVersion::Http1,
        )
    }

    /// Copy-paste `curl` commands that go through the gateway.
    pub fn curl_commands(&self) -> Vec<String> {
        let pki = &self.paths;
        let port = self.gateway.data_addr.port();
        let tls = |who: &str| {
            format!(
                "--cacert {} --cert {} --key {}",
                pki.ca_cert().display(),
                pki.client_cert(who).display(),
                pki.client_key(who).display()
            )
        };
        let vcode = association().map(|v| v.to_string()).unwrap_or_default();
        let mut digits = [0u8; 11];
        let person = sigedis_person().map(|p| p.digits(&mut digits).to_owned()).unwrap_or_default();
        let mut v = vec![
            format!(
                "# Flemish agency A reads an association under protocol {ASSOC_LEGAL_BASIS}:\n\
                 curl -sS {} -H 'X-Legal-Basis: {ASSOC_LEGAL_BASIS}' -H 'X-Purpose: {ASSOC_PURPOSE}' \\\n  \
                 -H 'X-Subject: {vcode}' https://localhost:{port}/associations/association",
                tls(ASSOC_CALLER)
            ),
            format!(
                "# Agency B is not a party to that protocol: LEGAL_BASIS_NOT_APPLICABLE\n\
                 curl -sS {} -H 'X-Legal-Basis: {ASSOC_LEGAL_BASIS}' -H 'X-Purpose: {ASSOC_PURPOSE}' \\\n  \
                 -H 'X-Subject: {vcode}' https://localhost:{port}/associations/association",
                tls("agency-b")
            ),
            format!(
                "# Bank A reads supplementary pensions: consent-based; until the citizen consents: CONSENT_MISSING\n\
                 curl -sS {} -H 'X-Legal-Basis: {SIGEDIS_LEGAL_BASIS}' -H 'X-Purpose: {SIGEDIS_PURPOSE}' \\\n  \
                 -H 'X-Subject: {person}' https://localhost:{port}/sigedis/pensions",
                tls(SIGEDIS_CALLER)
            ),
            format!(
                "# The citizen consents through the citizen portal (control plane)…\n\
                 curl -sS {} -X POST https://localhost:{control}/consents -d '{{\"subject\":\"{person}\",\
                 \"recipient\":{{\"org\":\"0456123494\"}},\"service\":\"sigedis.pensions\",\
                 \"purpose\":\"{SIGEDIS_PURPOSE}\",\"valid_until\":\"2030-12-31\",\"evidence\":\"demo\"}}'",
                tls("citizen-portal"),
                control = self.gateway.control_addr.map_or(0, |a| a.port()),
            ),
            format!(
                "# …and now the same call as bank A gets the pensions\n\
                 curl -sS {} -H 'X-Legal-Basis: {SIGEDIS_LEGAL_BASIS}' -H 'X-Purpose: {SIGEDIS_PURPOSE}' \\\n  \
                 -H 'X-Subject: {person}' https://localhost:{port}/sigedis/pensions",
                tls(SIGEDIS_CALLER)
            ),
        ];
        let (plate, _) = div_vehicle().unwrap_or_default();
        let citizen = flemish_citizen().unwrap_or_default();
        let (_, search) = rn_search_example().unwrap_or_default();
        let (public, _) = public_associations().unwrap_or_default();
        let control = self.gateway.control_addr.map_or(0, |a| a.port());
        v.extend([
            format!(
                "# The insurer reads a vehicle from DIV by plate (SOAP 1.1), under its convention {DIV_LEGAL_BASIS}:\n\
                 curl -sS {} -H 'X-Legal-Basis: {DIV_LEGAL_BASIS}' -H 'X-Purpose: {DIV_PURPOSE}' \\\n  \
                 -H 'Content-Type: text/xml' -d '{}' https://localhost:{port}/div/vehicle",
                tls(DIV_CALLER),
                adapters::div::request_by_plate(&plate)
            ),
            format!(
                "# The citizen lets Flemish instances use the default account for GROEIPAKKET (art. 5/4)…\n\
                 curl -sS {} -X POST https://localhost:{control}/consents -d '{{\"subject\":\"{citizen}\",\
                 \"recipient\":{{\"kind\":\"flemish-instance\"}},\"service\":\"accounts.iban\",\
                 \"purpose\":\"{ACCOUNTS_PURPOSE}\",\"scope\":[\"GROEIPAKKET\"],\"valid_until\":\"2030-12-31\",\"evidence\":\"demo\"}}'",
                tls("citizen-portal"),
            ),
            format!(
                "# …then agency A reads the account to pay GROEIPAKKET (any other service: CONSENT_SCOPE_EXCEEDED)\n\
                 curl -sS {} -H 'X-Legal-Basis: {ACCOUNTS_LEGAL_BASIS}' -H 'X-Purpose: {ACCOUNTS_PURPOSE}' \\\n  \
                 -H 'X-Subject: {citizen}' -d '{{\"publicService\":\"GROEIPAKKET\"}}' https://localhost:{port}/accounts/iban",
                tls(ASSOC_CALLER)
            ),
            format!(
                "# Contact data: the citizen consents to contacts.contact for every service, then agency A reads them\n\
                 curl -sS {} -X POST https://localhost:{control}/consents -d '{{\"subject\":\"{citizen}\",\
                 \"recipient\":{{\"kind\":\"flemish-instance\"}},\"service\":\"contacts.contact\",\
                 \"purpose\":\"{CONTACTS_PURPOSE}\",\"scope\":[\"*\"],\"valid_until\":\"2030-12-31\",\"evidence\":\"demo\"}}'\n\
                 curl -sS {} -H 'X-Legal-Basis: {CONTACTS_LEGAL_BASIS}' -H 'X-Purpose: {CONTACTS_PURPOSE}' \\\n  \
                 -H 'X-Subject: {citizen}' -d '{{\"publicService\":\"ZORGBUDGET\"}}' https://localhost:{port}/contacts/contact",
                tls("citizen-portal"),
                tls(ASSOC_CALLER)
            ),
            format!(
                "# A local registration officer searches the National Register by name and birth date\n\
                 curl -sS {} -H 'X-Legal-Basis: BOSA/LRA/2024' -H 'X-Purpose: LRA_REGISTRATION' \\\n  \
                 -H 'X-End-User: lra-officer-1' -d '{search}' https://localhost:{port}/rn/persons/search",
                tls("municipality")
            ),
            format!(
                "# Anyone reads an association's public items, without a certificate\n\
                 curl -sS --cacert {} https://localhost:{}/public/associations/{public}",
                pki.ca_cert().display(),
                self.gateway.public_addr.map_or(0, |a| a.port()),
            ),
        ]);
        v
    }

    /// Runs the demo's calls over real TLS and checks each outcome.
    pub async fn smoke(&self) -> anyhow::Result<Vec<Check>> {
        let mut checks = Vec::new();
        let vcode = association().context("sandbox has no association")?.to_string();
        // A person with no consent on file: in a directory an earlier smoke run used, the first
        // person's consent was given and revoked, and a call about them is CONSENT_REVOKED.
        let person = (adapters::sigedis::sandbox::Register::persons().into_iter())
            .map(|n| {
                let mut digits = [0u8; 11];
                n.digits(&mut digits).to_owned()
            })
            .find(|p| self.gateway.consent.of_subject(p).is_ok_and(|c| c.is_empty()))
            .context("every sandbox person already has a consent on file")?;
        let assoc = |purpose: &str| -> Vec<(&'static str, String)> {
            vec![
                ("x-legal-basis", ASSOC_LEGAL_BASIS.to_owned()),
                ("x-purpose", purpose.to_owned()),
                ("x-subject", vcode.clone()),
            ]
        };
        let pension = |subject: &str| -> Vec<(&'static str, String)> {
            vec![
                ("x-legal-basis", SIGEDIS_LEGAL_BASIS.to_owned()),
                ("x-purpose", SIGEDIS_PURPOSE.to_owned()),
                ("x-subject", subject.to_owned()),
            ]
        };
        for version in [HttpVersion::Http1, HttpVersion::Http2] {
            let agency = self.client(ASSOC_CALLER, version)?;
            let got = call(&agency, ASSOCIATIONS, &assoc(ASSOC_PURPOSE)).await;
            checks.push(Check::new(
                format!("agency A reads an association ({version:?})"),
                "200 with the association",
                got.map(|a| {
                    let ok = a.status == 200 && a.json().ok().is_some_and(|v| v["vCode"] == vcode.as_str());
                    (ok, a.status.to_string())
                }),
            ));
        }
        let agency = self.client(ASSOC_CALLER, HttpVersion::Http1)?;
        let got = call(&agency, ASSOCIATIONS, &assoc("MARKETING")).await;
        checks.push(Check::refusal(
            "a purpose outside the protocol",
            "403 PURPOSE_NOT_ALLOWED",
            got,
            403,
            "PURPOSE_NOT_ALLOWED",
        ));
        let got = call(&self.client("agency-b", HttpVersion::Http1)?, ASSOCIATIONS, &assoc(ASSOC_PURPOSE)).await;
        checks.push(Check::refusal(
            "agency B is not a party",
            "403 LEGAL_BASIS_NOT_APPLICABLE",
            got,
            403,
            "LEGAL_BASIS_NOT_APPLICABLE",
        ));
        let bank = self.client(SIGEDIS_CALLER, HttpVersion::Http1)?;
        let got = call(&bank, PENSIONS, &pension(&person)).await;
        checks.push(Check::refusal(
            "pensions without consent on file",
            "403 CONSENT_MISSING",
            got,
            403,
            "CONSENT_MISSING",
        ));
        // The citizen gives consent through the citizen access point (control plane)…
        let portal = self.control_client("citizen-portal")?;
        let body = serde_json::json!({
            "subject": person, "recipient": {"org": org_kbo(SIGEDIS_CALLER).map(|k| {
                let mut d = [0u8; 10];
                k.digits(&mut d).to_owned()
            })}, "service": "sigedis.pensions", "purpose": SIGEDIS_PURPOSE,
            "valid_until": "2030-12-31", "evidence": "demo-portal-session",
        });
        let given = portal
            .send(client::request(Method::POST, "/consents", &[], Bytes::from(body.to_string()))?)
            .await
            .and_then(|a| a.json().map(|v| (a.status, v)));
        let id = given.as_ref().ok().and_then(|(_, v)| v["id"].as_str().map(str::to_owned));
        checks.push(Check::new(
            "the citizen gives consent (control plane)".into(),
            "201 with a consent id",
            given.map(|(st, _)| (st == 201 && id.is_some(), st.to_string())),
        ));
        // …and the same call passes, until the consent is revoked.
        let got = call(&bank, PENSIONS, &pension(&person)).await;
        checks.push(Check::new(
            "pensions with consent on file".into(),
            "200 with plans",
            got.map(|a| (a.status == 200 && a.text().contains("plans"), a.status.to_string())),
        ));
        let revoked = portal
            .send(client::request(
                Method::POST,
                &format!("/consents/{}/revoke", id.unwrap_or_default()),
                &[],
                Bytes::new(),
            )?)
            .await;
        checks.push(Check::new(
            "the citizen revokes it".into(),
            "200",
            revoked.map(|a| (a.status == 200, a.status.to_string())),
        ));
        let got = call(&bank, PENSIONS, &pension(&person)).await;
        checks.push(Check::refusal(
            "pensions right after revocation",
            "403 CONSENT_REVOKED",
            got,
            403,
            "CONSENT_REVOKED",
        ));
        let got = call(&self.client("company", HttpVersion::Http1)?, PENSIONS, &pension(&person)).await;
        checks.push(Check::refusal(
            "a company outside the sector",
            "403 LEGAL_BASIS_NOT_APPLICABLE",
            got,
            403,
            "LEGAL_BASIS_NOT_APPLICABLE",
        ));
        // A local registration officer searches the National Register; an expired role does not.
        let mut d = [0u8; 11];
        let citizen = adapters::rn::sandbox::Register::persons()
            .get(adapters::rn::sandbox::BIS)
            .map(|p| p.digits(&mut d).to_owned())
            .unwrap_or_default();
        let lra = |user: &str| -> Vec<(&'static str, String)> {
            vec![
                ("x-legal-basis", "BOSA/LRA/2024".to_owned()),
                ("x-purpose", "LRA_REGISTRATION".to_owned()),
                ("x-subject", citizen.clone()),
                ("x-end-user", user.to_owned()),
            ]
        };
        let municipality = self.client("municipality", HttpVersion::Http1)?;
        let got = call(&municipality, "/rn/person", &lra("lra-officer-1")).await;
        checks.push(Check::new(
            "an LRA officer with a valid role".into(),
            "200 with the person",
            got.map(|a| (a.status == 200 && a.text().contains("birthDate"), a.status.to_string())),
        ));
        let got = call(&municipality, "/rn/person", &lra("lra-officer-2")).await;
        checks.push(Check::refusal(
            "an LRA officer whose role expired",
            "403 END_USER_ROLE_MISSING",
            got,
            403,
            "END_USER_ROLE_MISSING",
        ));
        self.smoke_sources(&mut checks).await?;
        self.smoke_open_flows(&mut checks).await?;
        let got = call(&bank, PENSIONS, &pension("85073003329")).await;
        checks.push(Check::refusal("an invalid NISS", "400 SUBJECT_INVALID", got, 400, "SUBJECT_INVALID"));
        let got = call(&agency, ASSOCIATIONS, &[("x-purpose", ASSOC_PURPOSE.to_owned())]).await;
        checks.push(Check::refusal("no legal basis named", "400 ENVELOPE_INVALID", got, 400, "ENVELOPE_INVALID"));

        // A certificate of another CA, carrying agency A's own enterprise number.
        let mut rogue = certs::Ca::generate("Rogue CA")?;
        let kbo = org_kbo(ASSOC_CALLER).context("agency A")?;
        let issued = rogue.issue_client(&ClientSpec::org("Rogue", kbo))?;
        let rogue_client = MtlsClient::new(
            self.gateway.data_addr,
            self.pki.ca.cert_pem().as_bytes(),
            Some((issued.cert_pem.as_bytes(), issued.key_pem.as_bytes())),
            HttpVersion::Http1,
        )?;
        let got = call(&rogue_client, ASSOCIATIONS, &assoc(ASSOC_PURPOSE)).await;
        checks.push(Check::handshake_refused("a certificate from another CA", got));
        let revoked = self.client(REVOKED, HttpVersion::Http1)?;
        let got = call(&revoked, ASSOCIATIONS, &assoc(ASSOC_PURPOSE)).await;
        checks.push(Check::handshake_refused("a revoked certificate", got));
        self.smoke_authority(&mut checks, &person, &citizen).await?;
        Ok(checks)
    }
}

impl Demo {
    /// The smoke checks of the chain of authority: a suspended framework refuses its
    /// children, an exceptional access is approved tacitly on the 7th day after the privacy
    /// office's advice (the gateway's clock moved, then put back) and not before, and a
    /// statutory ceiling refuses a widening registration. `citizen` is the National Register
    /// person the LRA calls are about. Each leaves the policy as it found it
    /// in force (the framework resumed, the access withdrawn), so the run can be repeated.
    async fn smoke_authority(&self, checks: &mut Vec<Check>, person: &str, citizen: &str) -> anyhow::Result<()> {
        let json = |v: serde_json::Value| v.to_string();
        let sigedis = self.control_client("sigedis")?;
        let framework = "/instruments/CSI%2FSSH%2F19%2F004/transitions";
        let reason = "all datatransfer activities suspended (demo)";
        let got = post(
            &sigedis,
            Method::POST,
            framework,
            &[],
            json(serde_json::json!({"to": "suspended", "reason": reason})),
        )
        .await;
        checks.push(Check::new(
            "Sigedis suspends framework 19/004".into(),
            "200",
            got.map(|a| (a.status == 200, a.status.to_string())),
        ));
        let pension = vec![
            ("x-legal-basis", SIGEDIS_LEGAL_BASIS.to_owned()),
            ("x-purpose", SIGEDIS_PURPOSE.to_owned()),
            ("x-subject", person.to_owned()),
        ];
        let bank = self.client(SIGEDIS_CALLER, HttpVersion::Http1)?;
        let got = call(&bank, PENSIONS, &pension).await;
        checks.push(Check::new(
            "an adherent of the special authorization, framework suspended".into(),
            "503 FLOW_SUSPENDED naming 19/004",
            got.map(|a| {
                let ok = a.status == 503 && a.code() == Some("FLOW_SUSPENDED") && a.text().contains("CSI/SSH/19/004");
                (ok, format!("{} {}", a.status, a.code().unwrap_or("-")))
            }),
        ));
        let got = post(&sigedis, Method::POST, framework, &[], json(serde_json::json!({"to": "active"}))).await;
        checks.push(Check::new(
            "Sigedis lifts the suspension".into(),
            "200",
            got.map(|a| (a.status == 200, a.status.to_string())),
        ));

        // Exceptional access (seed 004 §4): requested by the municipality, advised by BOSA's
        // privacy office, approved tacitly on the 7th day unless remarked.
        let stamp = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_millis());
        let (id, user) = (format!("x-smoke-{stamp}"), format!("temp-{stamp}"));
        let municipality = self.control_client("municipality")?;
        let until = policies::model::Date::from_days((self.gateway.policy.now_ms() / 86_400_000) as i64 + 60)
            .context("date out of range")?;
        let request = serde_json::json!({
            "id": id, "instrument": "BOSA/LRA/2024", "end_user": user, "service": "rn.person",
            "purposes": ["LRA_REGISTRATION"], "fields": ["names", "birthDate"],
            "justification": "temporary replacement of an officer (demo)", "valid_until": until.to_string(),
        });
        let got = post(&municipality, Method::POST, "/exceptional-accesses", &[], json(request)).await;
        checks.push(Check::new(
            "the municipality requests an exceptional access".into(),
            "201",
            got.map(|a| (a.status == 201, a.status.to_string())),
        ));
        let bosa = self.control_client("bosa")?;
        let advice = serde_json::json!({ "reference": "BOSA-DPO-demo", "favourable": true });
        let got = post(&bosa, Method::POST, &format!("/exceptional-accesses/{id}/advice"), &[], json(advice)).await;
        checks.push(Check::new(
            "BOSA's privacy office advises (the gateway's clock stamps it)".into(),
            "200",
            got.map(|a| (a.status == 200, a.status.to_string())),
        ));
        let lra = vec![
            ("x-legal-basis", "BOSA/LRA/2024".to_owned()),
            ("x-purpose", "LRA_REGISTRATION".to_owned()),
            ("x-subject", citizen.to_owned()),
            ("x-end-user", user.clone()),
        ];
        let officer = self.client("municipality", HttpVersion::Http1)?;
        self.gateway.policy.advance_clock(Duration::from_secs(6 * 86_400));
        let got = call(&officer, "/rn/person", &lra).await;
        checks.push(Check::new(
            "the exceptional access on day 6 after the advice".into(),
            "403, not approved yet",
            got.map(|a| (a.status == 403, format!("{} {}", a.status, a.code().unwrap_or("-")))),
        ));
        self.gateway.policy.advance_clock(Duration::from_secs(86_400));
        let got = call(&officer, "/rn/person", &lra).await;
        self.gateway.policy.reset_clock();
        checks.push(Check::new(
            "the exceptional access on day 7: approved tacitly".into(),
            "200 with the granted fields only",
            got.map(|a| {
                let t = a.text();
                (a.status == 200 && t.contains("birthDate") && !t.contains("address"), a.status.to_string())
            }),
        ));
        let withdraw = serde_json::json!({ "reason": "end of the demo" });
        let got = post(&bosa, Method::POST, &format!("/exceptional-accesses/{id}/withdraw"), &[], json(withdraw)).await;
        checks.push(Check::new(
            "BOSA withdraws it".into(),
            "200",
            got.map(|a| (a.status == 200, a.status.to_string())),
        ));

        // A statutory ceiling: the account-number source is for Flemish instances, one
        // purpose, with consent — whatever its data owner registers.
        let owner = self.control_client("digitaal-vlaanderen")?;
        let widening = serde_json::json!({
            "reference": format!("VL/WIDE/{stamp}"), "kind": "statutory", "title": "widening (demo)",
            "law": "none", "article": "none", "status": "active",
            "grants": [{ "id": format!("wide-{stamp}"), "recipient": {"org": "0765432146"}, "service": "accounts.iban",
                         "purposes": ["MARKETING"], "fields": ["defaultIban"] }],
        });
        let got = post(&owner, Method::POST, "/instruments", &[], json(widening)).await;
        checks.push(Check::new(
            "a data owner opens the account-number source to a company".into(),
            "422 POLICY_INVALID naming the ceiling",
            got.map(|a| {
                let ok =
                    a.status == 422 && a.code() == Some("POLICY_INVALID") && a.text().contains("statutory ceiling");
                (ok, format!("{} {}", a.status, a.code().unwrap_or("-")))
            }),
        ));
        Ok(())
    }
}

impl Demo {
    /// The smoke checks of DIV, the Flemish account-number and contact-data sources and the
    /// National Register search by name.
    async fn smoke_sources(&self, checks: &mut Vec<Check>) -> anyhow::Result<()> {
        // DIV: the insurer's convention is active; the leasing company's is in its test phase.
        let (plate, _) = div_vehicle().context("the DIV sandbox has no vehicle")?;
        let div = |basis: &str, purpose: &str| -> Vec<(&'static str, String)> {
            vec![("x-legal-basis", basis.to_owned()), ("x-purpose", purpose.to_owned())]
        };
        let insurer = self.client(DIV_CALLER, HttpVersion::Http1)?;
        let got = post(
            &insurer,
            Method::POST,
            DIV,
            &div(DIV_LEGAL_BASIS, DIV_PURPOSE),
            adapters::div::request_by_plate(&plate),
        )
        .await;
        checks.push(Check::new(
            "the insurer reads a vehicle by plate (SOAP)".into(),
            "200 with holder, no address",
            got.map(|a| {
                let t = a.text();
                (a.status == 200 && t.contains("<Holder>") && !t.contains("<Address>"), a.status.to_string())
            }),
        ));
        let got =
            post(&insurer, Method::POST, DIV, &div(DIV_LEGAL_BASIS, DIV_PURPOSE), BILLION_LAUGHS.to_owned()).await;
        // SOAP 1.1 carries faults with HTTP 500; the stable code is in the fault.
        checks.push(Check::refusal(
            "a billion-laughs SOAP body",
            "500 Fault LAYOUT_VIOLATION",
            got,
            500,
            "LAYOUT_VIOLATION",
        ));
        let leasing = self.client("leasing", HttpVersion::Http1)?;
        let got = post(
            &leasing,
            Method::POST,
            DIV,
            &div("DIV/CONV/2024/0007", "FLEET_MANAGEMENT"),
            adapters::div::request_by_plate(&plate),
        )
        .await;
        checks.push(Check::refusal(
            "a convention in its test phase, in production",
            "500 Fault INSTRUMENT_NOT_ACTIVE",
            got,
            500,
            "INSTRUMENT_NOT_ACTIVE",
        ));

        // Flemish sources: the citizen consents (default usable for GROEIPAKKET only).
        let citizen = flemish_citizen().context("the Flemish sandbox has no citizen")?;
        let portal = self.control_client("citizen-portal")?;
        for (service, purpose, scope) in
            [("accounts.iban", ACCOUNTS_PURPOSE, "GROEIPAKKET"), ("contacts.contact", CONTACTS_PURPOSE, "*")]
        {
            let body = serde_json::json!({
                "subject": citizen, "recipient": {"kind": "flemish-instance"}, "service": service,
                "purpose": purpose, "scope": [scope], "valid_until": "2030-12-31", "evidence": "demo-portal-session",
            });
            let given = post(&portal, Method::POST, "/consents", &[], body.to_string()).await;
            checks.push(Check::new(
                format!("the citizen consents to {service} (scope {scope})"),
                "201",
                given.map(|a| (a.status == 201, a.status.to_string())),
            ));
        }
        let agency = self.client(ASSOC_CALLER, HttpVersion::Http1)?;
        let flemish = |basis: &str, purpose: &str| -> Vec<(&'static str, String)> {
            vec![("x-legal-basis", basis.to_owned()), ("x-purpose", purpose.to_owned()), ("x-subject", citizen.clone())]
        };
        let account = |service: &str| serde_json::json!({ "publicService": service }).to_string();
        let got = post(
            &agency,
            Method::POST,
            ACCOUNTS,
            &flemish(ACCOUNTS_LEGAL_BASIS, ACCOUNTS_PURPOSE),
            account("GROEIPAKKET"),
        )
        .await;
        checks.push(Check::new(
            "an account for a service the consent's scope covers".into(),
            "200 with the default IBAN",
            got.map(|a| (a.status == 200 && a.text().contains("defaultIban"), a.status.to_string())),
        ));
        let got = post(
            &agency,
            Method::POST,
            ACCOUNTS,
            &flemish(ACCOUNTS_LEGAL_BASIS, ACCOUNTS_PURPOSE),
            account("STUDIETOELAGE"),
        )
        .await;
        checks.push(Check::refusal(
            "an account for a service outside that scope",
            "403 CONSENT_SCOPE_EXCEEDED",
            got,
            403,
            "CONSENT_SCOPE_EXCEEDED",
        ));
        let got = post(
            &agency,
            Method::POST,
            CONTACTS,
            &flemish(CONTACTS_LEGAL_BASIS, CONTACTS_PURPOSE),
            account("ZORGBUDGET"),
        )
        .await;
        checks.push(Check::new(
            "contact data for interacting with the citizen".into(),
            "200 with an e-mail address",
            got.map(|a| (a.status == 200 && a.text().contains("email"), a.status.to_string())),
        ));

        // The association register's public subset, to anyone, without a certificate.
        let (public, hidden) = public_associations().context("the register has no public association")?;
        let addr = self.gateway.public_addr.context("the public listener is off")?;
        let anyone = MtlsClient::new(addr, self.pki.ca.cert_pem().as_bytes(), None, HttpVersion::Http1)?;
        let got = call(&anyone, &format!("/public/associations/{public}"), &[]).await;
        checks.push(Check::new(
            "anyone reads an active association's public items".into(),
            "200 without representatives or bank account",
            got.map(|a| {
                let t = a.text();
                (
                    a.status == 200
                        && t.contains("name")
                        && !t.contains("representatives")
                        && !t.contains("bankAccount"),
                    a.status.to_string(),
                )
            }),
        ));
        let got = call(&anyone, &format!("/public/associations/{hidden}"), &[]).await;
        checks.push(Check::refusal(
            "a de facto association that opted out",
            "404 SUBJECT_NOT_FOUND",
            got,
            404,
            "SUBJECT_NOT_FOUND",
        ));

        // National Register: a search by name and birth date.
        let (niss, query) = rn_search_example().context("the National Register sandbox has no person")?;
        let municipality = self.client("municipality", HttpVersion::Http1)?;
        let h = vec![
            ("x-legal-basis", "BOSA/LRA/2024".to_owned()),
            ("x-purpose", "LRA_REGISTRATION".to_owned()),
            ("x-end-user", "lra-officer-1".to_owned()),
        ];
        let got = post(&municipality, Method::POST, RN_SEARCH, &h, query).await;
        checks.push(Check::new(
            "an LRA officer searches by name and birth date".into(),
            "200 with the person",
            got.map(|a| (a.status == 200 && a.text().contains(&niss), a.status.to_string())),
        ));
        Ok(())
    }
}

/// The DIV call of the demo: an insurer under its active convention.
pub const DIV_CALLER: &str = "insurer";
pub const DIV_LEGAL_BASIS: &str = "DIV/CONV/2023/0042";
pub const DIV_PURPOSE: &str = "INSURANCE_CLAIM";
/// The Flemish sources' statutory bases (art. 5/5 and 7/4), called by agency A.
pub const ACCOUNTS_LEGAL_BASIS: &str = "VL/DECR-2008-07-18/ART-5-5";
pub const ACCOUNTS_PURPOSE: &str = "BENEFIT_PAYMENT";
pub const CONTACTS_LEGAL_BASIS: &str = "VL/DECR-2008-07-18/ART-7-4";
pub const CONTACTS_PURPOSE: &str = "CITIZEN_INTERACTION";

/// A hostile SOAP body: entity expansion (the gateway refuses any DTD).
pub const BILLION_LAUGHS: &str = r#"<?xml version="1.0"?><!DOCTYPE lolz [<!ENTITY lol "lol"><!ENTITY lol1 "&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;"><!ENTITY lol2 "&lol1;&lol1;&lol1;&lol1;&lol1;&lol1;&lol1;&lol1;&lol1;&lol1;">]><soap:Envelope xmlns:soap="http://schemas.xmlsoap.org/soap/envelope/"><soap:Body><GetVehicleRequest xmlns="urn:be:passerelle:div:vehicle:v1"><Plate>&lol2;</Plate></GetVehicleRequest></soap:Body></soap:Envelope>"#;

/// An association the public listener shows, and a de facto one that opted out of publication.
pub fn public_associations() -> Option<(String, String)> {
    let r = adapters::associations::sandbox::Register::generate();
    let all = adapters::associations::sandbox::Register::vcodes(adapters::associations::sandbox::POPULATION);
    let find = |public: bool| {
        all.iter().find(|v| {
            r.get(**v).is_some_and(|a| {
                if public {
                    adapters::associations::is_public(&adapters::doc::Doc::from_value(&a.doc))
                } else {
                    a.opted_out && a.active
                }
            })
        })
    };
    Some((find(true)?.to_string(), find(false)?.to_string()))
}

/// A vehicle of the DIV sandbox: plate and VIN.
pub fn div_vehicle() -> Option<(String, String)> {
    let r = adapters::div::sandbox::Register::generate();
    r.vehicles().first().map(|v| (v.plate.to_string(), v.vin.to_string()))
}

/// The first citizen of the Flemish sandbox: a default account and contact data, nothing
/// linked to any service.
pub fn flemish_citizen() -> Option<String> {
    let mut d = [0u8; 11];
    adapters::accounts::sandbox::Register::persons().first().map(|p| p.digits(&mut d).to_owned())
}

/// A person of the National Register sandbox and a search body that finds them.
pub fn rn_search_example() -> Option<(String, String)> {
    let r = adapters::rn::sandbox::Register::generate();
    let p = *adapters::rn::sandbox::Register::persons().get(adapters::rn::sandbox::BIS)?;
    let doc = r.person(p)?;
    let q = serde_json::json!({"lastName": doc["names"]["last"], "birthDate": doc["birthDate"]});
    let mut d = [0u8; 11];
    Some((p.digits(&mut d).to_owned(), q.to_string()))
}

const DIV: &str = "/div/vehicle";
const ACCOUNTS: &str = "/accounts/iban";
const CONTACTS: &str = "/contacts/contact";
const RN_SEARCH: &str = "/rn/persons/search";
const ASSOCIATIONS: &str = "/associations/association";
const PENSIONS: &str = "/sigedis/pensions";

/// Starts a sandbox on a listener.
pub type ServeFn = fn(tokio::net::TcpListener) -> std::io::Result<adapters::sandbox::SandboxServer>;

/// The sandboxes the demo starts, by source name (also `passerelle sandbox SOURCE`).
pub const SANDBOXES: &[(&str, ServeFn)] = &[
    ("div", adapters::div::sandbox::serve),
    ("sigedis", adapters::sigedis::sandbox::serve),
    ("associations", adapters::associations::sandbox::serve),
    ("accounts", adapters::accounts::sandbox::serve),
    ("contacts", adapters::accounts::sandbox::serve),
    ("rn", adapters::rn::sandbox::serve),
];

async fn call(client: &MtlsClient, path: &str, headers: &[(&'static str, String)]) -> anyhow::Result<Answer> {
    post(client, Method::GET, path, headers, String::new()).await
}

async fn post(
    client: &MtlsClient,
    method: Method,
    path: &str,
    headers: &[(&'static str, String)],
    body: String,
) -> anyhow::Result<Answer> {
    let h: Vec<(&str, &str)> = headers.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let req = client::request(method, path, &h, Bytes::from(body))?;
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
    let ew = checks.iter().map(|c| c.expected.len()).max().unwrap_or(0);
    for c in checks {
        println!(
            "{} {:width$}  expected {:ew$}  got {}",
            if c.ok { "PASS" } else { "FAIL" },
            c.name,
            c.expected,
            c.got
        );
    }
    let passed = checks.iter().filter(|c| c.ok).count();
    println!("smoke: {passed} passed, {} failed", checks.len() - passed);
    passed == checks.len()
}
