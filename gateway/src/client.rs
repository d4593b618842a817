//! A small mTLS HTTP client for the demo's smoke run, the integration tests and the load
//! generator: one TLS connection per [`Connection`], HTTP/1.1 or HTTP/2 by ALPN.

use std::net::SocketAddr;
use std::sync::Arc;

use anyhow::Context as _;
use bytes::Bytes;
use http::{HeaderMap, Request, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper::client::conn::{http1, http2};
use hyper_util::rt::{TokioExecutor, TokioIo};
use rustls_pki_types::ServerName;
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;

use crate::tls;

/// Which HTTP version to offer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HttpVersion {
    Http1,
    Http2,
}

/// Connects to one gateway address with one client identity.
#[derive(Clone)]
pub struct MtlsClient {
    connector: TlsConnector,
    addr: SocketAddr,
    server_name: ServerName<'static>,
    version: HttpVersion,
}

impl std::fmt::Debug for MtlsClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MtlsClient").field("addr", &self.addr).field("version", &self.version).finish()
    }
}

/// A full answer.
#[derive(Debug)]
pub struct Answer {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: Bytes,
}

impl Answer {
    /// The refusal code of the answer, if it is a refusal.
    pub fn code(&self) -> Option<&str> {
        self.headers.get("x-passerelle-code").and_then(|v| v.to_str().ok())
    }

    pub fn json(&self) -> anyhow::Result<serde_json::Value> {
        serde_json::from_slice(&self.body).context("answer is not JSON")
    }

    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

enum Sender {
    H1(http1::SendRequest<Full<Bytes>>),
    H2(http2::SendRequest<Full<Bytes>>),
}

/// One open TLS connection.
pub struct Connection {
    sender: Sender,
}

impl std::fmt::Debug for Connection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Connection")
    }
}

impl MtlsClient {
    /// `identity` is the client certificate and key (PEM); `None` connects without one.
    pub fn new(
        addr: SocketAddr,
        ca_pem: &[u8],
        identity: Option<(&[u8], &[u8])>,
        version: HttpVersion,
    ) -> anyhow::Result<Self> {
        let alpn: &[&[u8]] = match version {
            HttpVersion::Http1 => &[b"http/1.1"],
            HttpVersion::Http2 => &[b"h2"],
        };
        let config = tls::client_config(ca_pem, identity, alpn)?;
        Ok(MtlsClient {
            connector: TlsConnector::from(Arc::new(config)),
            addr,
            server_name: ServerName::try_from("localhost")?.to_owned(),
            version,
        })
    }

    /// A client with a prepared TLS configuration (the load generator turns session
    /// resumption off to measure full handshakes).
    pub fn from_config(addr: SocketAddr, config: rustls::ClientConfig, version: HttpVersion) -> anyhow::Result<Self> {
        Ok(MtlsClient {
            connector: TlsConnector::from(Arc::new(config)),
            addr,
            server_name: ServerName::try_from("localhost")?.to_owned(),
            version,
        })
    }

    /// Opens a connection (TCP + full TLS handshake + HTTP handshake).
    pub async fn connect(&self) -> anyhow::Result<Connection> {
        let tcp = TcpStream::connect(self.addr).await.context("TCP connect")?;
        tcp.set_nodelay(true)?;
        let tls = self.connector.connect(self.server_name.clone(), tcp).await.context("TLS handshake")?;
        let io = TokioIo::new(tls);
        let sender = match self.version {
            HttpVersion::Http1 => {
                let (sender, conn) = http1::handshake(io).await?;
                tokio::spawn(conn);
                Sender::H1(sender)
            }
            HttpVersion::Http2 => {
                let (sender, conn) = http2::handshake(TokioExecutor::new(), io).await?;
                tokio::spawn(conn);
                Sender::H2(sender)
            }
        };
        Ok(Connection { sender })
    }

    /// Sends one request on a fresh connection.
    pub async fn send(&self, req: Request<Full<Bytes>>) -> anyhow::Result<Answer> {
        self.connect().await?.send(req).await
    }
}

impl Connection {
    pub async fn send(&mut self, mut req: Request<Full<Bytes>>) -> anyhow::Result<Answer> {
        let resp = match &mut self.sender {
            Sender::H1(s) => {
                if !req.headers().contains_key(http::header::HOST) {
                    req.headers_mut().insert(http::header::HOST, http::HeaderValue::from_static("localhost"));
                }
                s.ready().await?;
                s.send_request(req).await?
            }
            Sender::H2(s) => {
                if req.uri().scheme().is_none() {
                    let pq = req.uri().path_and_query().map(|p| p.as_str()).unwrap_or("/").to_owned();
                    *req.uri_mut() = format!("https://localhost{pq}").parse()?;
                }
                s.ready().await?;
                s.send_request(req).await?
            }
        };
        let (parts, body) = resp.into_parts();
        let body = body.collect().await?.to_bytes();
        Ok(Answer { status: parts.status, headers: parts.headers, body })
    }
}

/// Builds a data-plane request with the envelope headers.
pub fn request(
    method: http::Method,
    path: &str,
    headers: &[(&str, &str)],
    body: Bytes,
) -> anyhow::Result<Request<Full<Bytes>>> {
    let mut b = Request::builder().method(method).uri(path);
    for (k, v) in headers {
        b = b.header(*k, *v);
    }
    Ok(b.body(Full::new(body))?)
}
