//! Shared harness of the black-box integration tests: a real gateway (the same [`Demo`] that
//! `passerelle demo` runs) on an ephemeral port in a temporary directory, real sandboxes, real
//! TLS, and client certificates with every fault the tests need.

use std::time::Duration;

use bytes::Bytes;
use certs::{ClientSpec, DevClient};
pub use gateway::client::Answer;
use gateway::client::{self, HttpVersion, MtlsClient};
use gateway::demo::{self, Demo, DemoOptions};
use http::Method;
use policies::ids::Kbo;

pub use gateway::demo::{
    ASSOC_CALLER, ASSOC_LEGAL_BASIS, ASSOC_PURPOSE, SIGEDIS_CALLER, SIGEDIS_LEGAL_BASIS, SIGEDIS_PURPOSE,
};

/// Client certificates issued by the harness on top of the demo's.
pub const EXPIRED: &str = "expired";
pub const NOT_YET_VALID: &str = "not-yet-valid";
pub const NO_KBO: &str = "no-kbo";
pub const BAD_KBO: &str = "bad-kbo";
pub const SERVER_EKU: &str = "server-eku";
/// Agency A's identity in the integration (test) environment, `OU=INT`.
pub const AGENCY_A_INT: &str = "agency-a-int";
/// A leasing company the seed policy does not know: the control-plane tests register it.
pub const FLEET: &str = "fleet";
/// The same company's identity in the integration (test) environment.
pub const FLEET_INT: &str = "fleet-int";
/// Its enterprise number (synthetic, valid mod 97).
pub const FLEET_KBO: &str = "0412345614";
/// A public prosecutor's office the seed policy does not know: the a-posteriori control's
/// tests register it and designate it as a requester.
pub const PROSECUTOR: &str = "prosecutor";
/// Its enterprise number (synthetic, valid mod 97).
pub const PROSECUTOR_KBO: &str = "0310002003";

/// An enterprise that holds a vehicle in the DIV sandbox, unknown to the policy: it asks "who
/// consulted the data about us" with its own certificate.
pub const HOLDER: &str = "holder";
/// An association of the association register, registered by the tests with its vCode.
pub const ASSOCIATION: &str = "association";
/// Its enterprise number (synthetic, valid mod 97).
pub const ASSOCIATION_KBO: &str = "0310010515";

/// A second municipality the seed policy does not know: it signs the LRA usage convention
/// (seed 003) from the first step.
pub const MUNICIPALITY_B: &str = "municipality-b";
/// Its enterprise number (synthetic, valid mod 97).
pub const MUNICIPALITY_B_KBO: &str = "0207000275";

/// The enterprise number of [`HOLDER`]: the first company holding a vehicle in the DIV sandbox.
pub fn holder_kbo() -> Kbo {
    adapters::div::sandbox::Register::generate()
        .vehicles()
        .iter()
        .find_map(|v| match v.holder {
            adapters::div::sandbox::Holder::Organisation(k) => Some(k),
            _ => None,
        })
        .unwrap_or_else(|| unreachable!("the DIV sandbox has company holders"))
}

fn extra_clients() -> Vec<DevClient> {
    let kbo = demo::org_kbo(ASSOC_CALLER).unwrap_or_else(|| unreachable!("the seed policy has agency A"));
    let now = time::OffsetDateTime::now_utc();
    let mut expired = ClientSpec::org("Expired", kbo);
    expired.not_before = now - time::Duration::days(400);
    expired.not_after = now - time::Duration::days(35);
    let mut future = ClientSpec::org("Future", kbo);
    future.not_before = now + time::Duration::days(30);
    future.not_after = now + time::Duration::days(400);
    let mut no_kbo = ClientSpec::org("No enterprise number", kbo);
    no_kbo.enterprise_number = None;
    let mut bad_kbo = ClientSpec::org("Bad enterprise number", kbo);
    bad_kbo.enterprise_number = Some("0431150351".to_owned()); // fails mod 97 (DOMAIN.md §5)
    let mut server_eku = ClientSpec::org("Wrong key usage", kbo);
    server_eku.eku = certs::Eku::ServerAuth;
    let mut int = ClientSpec::org("Agency A (integration)", kbo);
    int.environment = Some(certs::Environment::Integration);
    let fleet_kbo = Kbo::parse(FLEET_KBO).unwrap_or_else(|_| unreachable!("a valid enterprise number"));
    let fleet = ClientSpec::org("Fleet lessor", fleet_kbo);
    let mut fleet_int = ClientSpec::org("Fleet lessor (integration)", fleet_kbo);
    fleet_int.environment = Some(certs::Environment::Integration);
    let prosecutor_kbo = Kbo::parse(PROSECUTOR_KBO).unwrap_or_else(|_| unreachable!("a valid enterprise number"));
    let prosecutor = ClientSpec::org("Public prosecutor's office (synthetic)", prosecutor_kbo);
    let holder = ClientSpec::org("Vehicle-holding company (synthetic)", holder_kbo());
    let association_kbo = Kbo::parse(ASSOCIATION_KBO).unwrap_or_else(|_| unreachable!("a valid enterprise number"));
    let association = ClientSpec::org("Association (synthetic)", association_kbo);
    let municipality_b_kbo =
        Kbo::parse(MUNICIPALITY_B_KBO).unwrap_or_else(|_| unreachable!("a valid enterprise number"));
    let municipality_b = ClientSpec::org("Municipality B (synthetic)", municipality_b_kbo);
    [
        (EXPIRED, expired),
        (NOT_YET_VALID, future),
        (NO_KBO, no_kbo),
        (BAD_KBO, bad_kbo),
        (SERVER_EKU, server_eku),
        (AGENCY_A_INT, int),
        (FLEET, fleet),
        (FLEET_INT, fleet_int),
        (PROSECUTOR, prosecutor),
        (HOLDER, holder),
        (ASSOCIATION, association),
        (MUNICIPALITY_B, municipality_b),
    ]
    .into_iter()
    .map(|(n, spec)| DevClient { name: n.to_owned(), spec, revoked: false })
    .collect()
}

/// A running gateway for one test.
#[derive(Debug)]
pub struct Harness {
    pub demo: Demo,
    _dir: tempfile::TempDir,
}

impl Harness {
    pub async fn start() -> anyhow::Result<Self> {
        Self::with_overrides(&[]).await
    }

    /// Starts with config overrides (`PASSERELLE__…` pairs).
    pub async fn with_overrides(overrides: &[(&str, &str)]) -> anyhow::Result<Self> {
        Self::with(overrides, None).await
    }

    /// Starts with config overrides and an edit of the seed bundles.
    pub async fn with(
        overrides: &[(&str, &str)],
        bundle_edit: Option<fn(&str, String) -> String>,
    ) -> anyhow::Result<Self> {
        let dir = tempfile::tempdir()?;
        let mut opts = DemoOptions::new(dir.path(), 0);
        opts.extra_clients = extra_clients();
        opts.bundle_edit = bundle_edit;
        opts.overrides = overrides.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())).collect();
        let demo = Demo::start(opts).await?;
        Ok(Harness { demo, _dir: dir })
    }

    /// Shuts the gateway down (final checkpoint written) and hands back its working
    /// directory, which lives as long as the returned guard.
    pub async fn stop(self) -> (gateway::config::Config, tempfile::TempDir) {
        let config = self.demo.config.clone();
        self.demo.gateway.shutdown().await;
        (config, self._dir)
    }

    pub fn client(&self, name: &str) -> MtlsClient {
        self.demo.client(name, HttpVersion::Http1).unwrap_or_else(|e| panic!("client {name}: {e:#}"))
    }

    pub fn client_h2(&self, name: &str) -> MtlsClient {
        self.demo.client(name, HttpVersion::Http2).unwrap_or_else(|e| panic!("client {name}: {e:#}"))
    }

    /// A control-plane client presenting the seed organisation's certificate `name`.
    pub fn control_client(&self, name: &str) -> MtlsClient {
        let issued = self.demo.pki.client(name).unwrap_or_else(|| panic!("no client certificate {name}"));
        let addr = self.demo.gateway.control_addr.unwrap_or_else(|| panic!("the control plane is off"));
        MtlsClient::new(
            addr,
            self.demo.pki.ca.cert_pem().as_bytes(),
            Some((issued.cert_pem.as_bytes(), issued.key_pem.as_bytes())),
            HttpVersion::Http1,
        )
        .unwrap_or_else(|e| panic!("control client {name}: {e:#}"))
    }

    /// A client of the public listener (HTTPS, no client certificate).
    pub fn public_client(&self) -> MtlsClient {
        let addr = self.demo.gateway.public_addr.unwrap_or_else(|| panic!("the public listener is off"));
        MtlsClient::new(addr, self.demo.pki.ca.cert_pem().as_bytes(), None, HttpVersion::Http1)
            .unwrap_or_else(|e| panic!("public client: {e:#}"))
    }

    /// Calls the control plane as `who` and checks the answer against the OpenAPI document:
    /// the operation and its status must be documented, and a JSON body must follow the
    /// documented schema.
    pub async fn ctl(&self, who: &str, method: Method, path: &str, body: Option<serde_json::Value>) -> Answer {
        let bytes = body.map(|b| Bytes::from(b.to_string())).unwrap_or_default();
        let headers: &[(&str, &str)] = &[("content-type", "application/json")];
        let a = send(&self.control_client(who), method.clone(), path, headers, bytes)
            .await
            .unwrap_or_else(|e| panic!("{method} {path}: {e:#}"));
        openapi::check(method.as_str(), path, &a);
        a
    }

    pub fn anonymous(&self) -> MtlsClient {
        MtlsClient::new(self.demo.gateway.data_addr, self.demo.pki.ca.cert_pem().as_bytes(), None, HttpVersion::Http1)
            .unwrap_or_else(|e| panic!("anonymous client: {e:#}"))
    }

    pub fn agency_kbo(&self) -> Kbo {
        Self::agency_kbo_static()
    }

    /// Agency A's enterprise number, before any gateway is started.
    pub fn agency_kbo_static() -> Kbo {
        demo::org_kbo(ASSOC_CALLER).unwrap_or_else(|| unreachable!())
    }
}

/// A known person of the Sigedis sandbox, as 11 digits.
pub fn person() -> String {
    let mut b = [0u8; 11];
    demo::sigedis_person().unwrap_or_else(|| unreachable!("sandbox population is not empty")).digits(&mut b).to_owned()
}

/// Another known person of the Sigedis sandbox.
pub fn other_person() -> String {
    let mut b = [0u8; 11];
    adapters::sigedis::sandbox::Register::persons()[1].digits(&mut b).to_owned()
}

/// A known association of the association register sandbox.
pub fn vcode() -> String {
    demo::association().unwrap_or_else(|| unreachable!("sandbox population is not empty")).to_string()
}

/// The demo's association register call (protocol VL/PROT/2022/017) with the given subject and
/// extra headers.
pub async fn association(client: &MtlsClient, subject: &str, extra: &[(&str, &str)]) -> anyhow::Result<Answer> {
    let mut h = vec![("x-legal-basis", ASSOC_LEGAL_BASIS), ("x-purpose", ASSOC_PURPOSE), ("x-subject", subject)];
    h.extend_from_slice(extra);
    send(client, Method::GET, "/associations/association", &h, Bytes::new()).await
}

/// The demo's Sigedis call with the given subject and extra headers.
pub async fn sigedis(client: &MtlsClient, subject: &str, extra: &[(&str, &str)]) -> anyhow::Result<Answer> {
    let mut h = vec![("x-legal-basis", SIGEDIS_LEGAL_BASIS), ("x-purpose", SIGEDIS_PURPOSE), ("x-subject", subject)];
    h.extend_from_slice(extra);
    send(client, Method::GET, "/sigedis/pensions", &h, Bytes::new()).await
}

/// A minimal association document that follows the register's layout.
pub fn association_doc(name: &str) -> serde_json::Value {
    serde_json::json!({ "vCode": "V0001001", "name": name, "status": "active" })
}

/// A real upstream that counts the requests it gets and answers `answer` to each.
pub async fn counting_upstream(
    answer: serde_json::Value,
) -> anyhow::Result<(adapters::sandbox::SandboxServer, std::sync::Arc<std::sync::atomic::AtomicUsize>)> {
    use std::sync::atomic::{AtomicUsize, Ordering};
    let hits = std::sync::Arc::new(AtomicUsize::new(0));
    let h = hits.clone();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let server = adapters::sandbox::serve(listener, move |_req| {
        h.fetch_add(1, Ordering::SeqCst);
        let answer = answer.clone();
        async move { adapters::sandbox::json(http::StatusCode::OK, &answer) }
    })?;
    Ok((server, hits))
}

/// The citizen `subject` consents, through the citizen portal, to bank A reading their
/// supplementary pensions (the demo's Sigedis flow) until the end of 2030.
pub async fn sigedis_consent(h: &Harness, subject: &str) -> anyhow::Result<()> {
    let body = sigedis_consent_body(subject)?;
    let a = send(&h.control_client("citizen-portal"), Method::POST, "/consents", &[], Bytes::from(body.to_string()))
        .await?;
    anyhow::ensure!(a.status == http::StatusCode::CREATED, "consent refused: {}", a.text());
    Ok(())
}

/// The body of `POST /consents` by which `subject` lets the Sigedis caller (bank A) read their
/// supplementary pensions for its purpose.
pub fn sigedis_consent_body(subject: &str) -> anyhow::Result<serde_json::Value> {
    let bank = demo::org_kbo(SIGEDIS_CALLER).ok_or_else(|| anyhow::anyhow!("no {SIGEDIS_CALLER} in the seeds"))?;
    let mut digits = [0u8; 10];
    Ok(serde_json::json!({
        "subject": subject,
        "recipient": { "org": bank.digits(&mut digits) },
        "service": "sigedis.pensions",
        "purpose": SIGEDIS_PURPOSE,
        "valid_until": "2030-12-31",
        "evidence": "portal-session-4711",
    }))
}

/// A TLS connection to the data plane as the client certificate `name`, for writing raw
/// bytes (malformed HTTP, trickled headers) that no HTTP client would send.
pub async fn raw_tls(
    h: &Harness,
    name: &str,
) -> anyhow::Result<tokio_rustls::client::TlsStream<tokio::net::TcpStream>> {
    let issued = h.demo.pki.client(name).ok_or_else(|| anyhow::anyhow!("no client certificate {name}"))?;
    let config = gateway::tls::client_config(
        h.demo.pki.ca.cert_pem().as_bytes(),
        Some((issued.cert_pem.as_bytes(), issued.key_pem.as_bytes())),
        &[b"http/1.1"],
    )?;
    let tcp = tokio::net::TcpStream::connect(h.demo.gateway.data_addr).await?;
    let name = rustls::pki_types::ServerName::try_from("localhost")?.to_owned();
    Ok(tokio_rustls::TlsConnector::from(std::sync::Arc::new(config)).connect(name, tcp).await?)
}

/// An instrument's reference as one path segment (`/` escaped).
pub fn enc(reference: &str) -> String {
    reference.replace('/', "%2F")
}

/// `GET path` on the operations listener (plain HTTP): status and body.
pub async fn ops_get(h: &Harness, path: &str) -> (u16, String) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let addr = h.demo.gateway.ops_addr.unwrap_or_else(|| panic!("the operations listener is off"));
    let mut s = tokio::net::TcpStream::connect(addr).await.unwrap_or_else(|e| panic!("ops listener: {e}"));
    let req = format!("GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
    s.write_all(req.as_bytes()).await.unwrap_or_else(|e| panic!("ops listener: {e}"));
    let mut buf = Vec::new();
    s.read_to_end(&mut buf).await.unwrap_or_else(|e| panic!("ops listener: {e}"));
    let text = String::from_utf8(buf).unwrap_or_else(|e| panic!("ops listener: {e}"));
    let status = text.get(9..12).and_then(|c| c.parse().ok()).unwrap_or(0);
    let body = text.split_once("\r\n\r\n").map(|(_, b)| b.to_owned()).unwrap_or_default();
    (status, body)
}

/// Sends one request on a fresh connection, failing the test after 15 s instead of hanging.
pub async fn send(
    client: &MtlsClient,
    method: Method,
    path: &str,
    headers: &[(&str, &str)],
    body: Bytes,
) -> anyhow::Result<Answer> {
    let req = client::request(method, path, headers, body)?;
    tokio::time::timeout(Duration::from_secs(15), client.send(req))
        .await
        .map_err(|_| anyhow::anyhow!("no answer within 15 s"))?
}

/// Checks control-plane answers against the OpenAPI document kept in the repository.
pub mod pg;

pub mod openapi {
    use std::sync::OnceLock;

    use serde_json::{Value, json};

    use super::Answer;

    /// The document, parsed once.
    pub fn document() -> &'static Value {
        static DOC: OnceLock<Value> = OnceLock::new();
        DOC.get_or_init(|| {
            serde_json::from_str(gateway::admin::OPENAPI).unwrap_or_else(|e| panic!("openapi.json: {e}"))
        })
    }

    /// Panics unless `answer` is a documented response of `method path`, with a body that
    /// follows the documented schema.
    pub fn check(method: &str, path: &str, answer: &Answer) {
        let (p, _) = path.split_once('?').unwrap_or((path, ""));
        let Ok(m) = gateway::admin::routes::find(method, p) else {
            return; // an undocumented path is refused by the router; the caller asserts that
        };
        let doc = document();
        let op = &doc["paths"][m.template][method.to_lowercase()];
        assert!(op.is_object(), "{method} {} is not in the OpenAPI document", m.template);
        let status = answer.status.as_u16().to_string();
        let resp = &op["responses"][&status];
        assert!(resp.is_object(), "{method} {}: status {status} is not documented: {}", m.template, answer.text());
        let ct = answer.headers.get("content-type").and_then(|v| v.to_str().ok()).unwrap_or("");
        let media = ct.split(';').next().unwrap_or("").trim();
        let Some(schema) = resp["content"].get(media).map(|c| &c["schema"]) else {
            panic!("{method} {}: {status} answered {media}, documented {:?}", m.template, resp["content"]);
        };
        if !media.ends_with("json") {
            return;
        }
        let body: Value = serde_json::from_slice(&answer.body)
            .unwrap_or_else(|e| panic!("{method} {}: the body is not JSON: {e}", m.template));
        let root = json!({
            "$schema": "https://json-schema.org/draft/2020-12/schema",
            "components": doc["components"],
            "allOf": [schema],
        });
        let validator = jsonschema::validator_for(&root).unwrap_or_else(|e| panic!("schema: {e}"));
        let errors: Vec<String> =
            validator.iter_errors(&body).map(|e| format!("{} at {}", e, e.instance_path())).collect();
        assert!(
            errors.is_empty(),
            "{method} {} {status}: the body does not follow the document: {errors:?}\n{body}",
            m.template
        );
    }
}

/// Checks a stopped gateway's trail with the verifier written from `docs/audit-format.md`
/// alone (`tests/audit-verifier/verify.py`): every record sealed, canonical, its members in
/// the documented order, the chains and signatures as the document states them.
pub fn verifies_by_the_document(dir: &std::path::Path, public_key: &[u8; 32]) {
    let key = gateway::audit::format::hex(public_key);
    let (code, said) = testkit::document_verifier_on_trail(dir, key);
    assert_eq!(code, Some(0), "the trail fails the document's verifier: {said}");
}
