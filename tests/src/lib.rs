//! Shared harness of the black-box integration tests: a real gateway (the same [`Demo`] that
//! `passerelle demo` runs) on an ephemeral port in a temporary directory, real sandboxes, real
//! TLS, and client certificates with every fault the tests need.

use std::time::Duration;

use bytes::Bytes;
use certs::{ClientSpec, DevClient};
use gateway::client::{self, Answer, HttpVersion, MtlsClient};
use gateway::demo::{self, Demo, DemoOptions};
use http::Method;
use policies::ids::Kbo;

pub use gateway::demo::{SIGEDIS_LEGAL_BASIS, SIGEDIS_PURPOSE};

/// Client certificates issued by the harness on top of the demo's.
pub const EXPIRED: &str = "expired";
pub const NOT_YET_VALID: &str = "not-yet-valid";
pub const NO_KBO: &str = "no-kbo";
pub const BAD_KBO: &str = "bad-kbo";
pub const SERVER_EKU: &str = "server-eku";

fn extra_clients() -> Vec<DevClient> {
    let kbo = demo::org_kbo("bank").unwrap_or_else(|| unreachable!("the demo has a bank"));
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
    [(EXPIRED, expired), (NOT_YET_VALID, future), (NO_KBO, no_kbo), (BAD_KBO, bad_kbo), (SERVER_EKU, server_eku)]
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
        let dir = tempfile::tempdir()?;
        let mut opts = DemoOptions::new(dir.path(), 0);
        opts.extra_clients = extra_clients();
        opts.overrides = overrides.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())).collect();
        let demo = Demo::start(opts).await?;
        Ok(Harness { demo, _dir: dir })
    }

    pub fn client(&self, name: &str) -> MtlsClient {
        self.demo.client(name, HttpVersion::Http1).unwrap_or_else(|e| panic!("client {name}: {e:#}"))
    }

    pub fn client_h2(&self, name: &str) -> MtlsClient {
        self.demo.client(name, HttpVersion::Http2).unwrap_or_else(|e| panic!("client {name}: {e:#}"))
    }

    /// A client that presents no certificate at all.
    pub fn anonymous(&self) -> MtlsClient {
        MtlsClient::new(self.demo.gateway.data_addr, self.demo.pki.ca.cert_pem().as_bytes(), None, HttpVersion::Http1)
            .unwrap_or_else(|e| panic!("anonymous client: {e:#}"))
    }

    pub fn bank_kbo(&self) -> Kbo {
        demo::org_kbo("bank").unwrap_or_else(|| unreachable!())
    }
}

/// A known person of the Sigedis sandbox, as 11 digits.
pub fn person() -> String {
    let mut b = [0u8; 11];
    demo::sigedis_person().unwrap_or_else(|| unreachable!("sandbox population is not empty")).digits(&mut b).to_owned()
}

/// The demo's Sigedis call with the given subject and extra headers.
pub async fn sigedis(client: &MtlsClient, subject: &str, extra: &[(&str, &str)]) -> anyhow::Result<Answer> {
    let mut h = vec![("x-legal-basis", SIGEDIS_LEGAL_BASIS), ("x-purpose", SIGEDIS_PURPOSE), ("x-subject", subject)];
    h.extend_from_slice(extra);
    send(client, Method::GET, "/sigedis/pensions", &h, Bytes::new()).await
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
