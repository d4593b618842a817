//! Keep-alive HTTP/1.1 connections to a source, reused from call to call.
//!
//! In place of hyper-util's legacy client, which did per call what a gateway with a handful of
//! fixed origins does not need: a hashed pool key built from the URI, a connector future made
//! and dropped even when a pooled connection was there, the client itself cloned into the call
//! (4 % of the data plane's samples together). Here a call takes an idle connection to its
//! origin (scheme and authority) from a short list, most recently used first; a connection
//! goes back to the list only once its answer has been read to the end ([`Lease::release`]),
//! so a call that failed or timed out half-way closes its connection.
//!
//! A pooled connection that the source closed meanwhile refuses the request before sending
//! anything (hyper hands it back), and the call moves to the next connection or a new one. A
//! request that was sent is never sent again: no call is known to be idempotent at its source.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::uri::{Authority, PathAndQuery};
use http::{HeaderValue, Request, Response, Uri, header};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::client::conn::http1::SendRequest;
use hyper_util::rt::TokioIo;
use rustls::pki_types::ServerName;

/// How long establishing a TCP connection may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);
/// An idle connection older than this is closed rather than reused.
const IDLE_TIMEOUT: Duration = Duration::from_secs(60);
/// Idle connections kept per source; more are closed when their calls end.
const MAX_IDLE: usize = 256;

/// Where a request goes: its scheme and authority.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Origin {
    https: bool,
    authority: Authority,
}

#[derive(Debug)]
struct Idle {
    origin: Origin,
    tx: SendRequest<Full<Bytes>>,
    since: Instant,
}

/// Why a call found no connection or no answer (for the log; the caller is told only that the
/// source cannot be reached).
#[derive(Debug, thiserror::Error)]
pub enum PoolError {
    #[error("the source's URL is not an absolute http(s) URL")]
    Url,
    #[error("connecting: {0}")]
    Connect(std::io::Error),
    #[error("connecting: no connection within {} s", CONNECT_TIMEOUT.as_secs())]
    ConnectTimeout,
    #[error("TLS handshake: {0}")]
    Tls(std::io::Error),
    #[error("{0}")]
    Http(#[from] hyper::Error),
}

/// The connections to one source (any of its origins: production and test sides).
#[derive(Debug)]
pub struct Pool {
    tls: Arc<rustls::ClientConfig>,
    idle: Mutex<Vec<Idle>>,
}

/// The connection a call's answer is being read from; back to the pool with
/// [`Lease::release`] once the answer is read to its end, closed if dropped before.
#[derive(Debug)]
pub struct Lease<'p> {
    pool: &'p Pool,
    idle: Option<(Origin, SendRequest<Full<Bytes>>)>,
}

impl Lease<'_> {
    pub fn release(mut self) {
        if let Some((origin, tx)) = self.idle.take() {
            self.pool.put(origin, tx);
        }
    }
}

impl Pool {
    /// A pool whose TLS connections use `tls` (HTTP/1.1 offered by ALPN).
    pub fn new(mut tls: rustls::ClientConfig) -> Self {
        tls.alpn_protocols = vec![b"http/1.1".to_vec()];
        Pool { tls: Arc::new(tls), idle: Mutex::new(Vec::new()) }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<Idle>> {
        self.idle.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Sends `req` (with an absolute `http`/`https` URI) and returns the answer's head, its
    /// body still to be read, with the lease of its connection.
    pub async fn request(&self, mut req: Request<Full<Bytes>>) -> Result<(Response<Incoming>, Lease<'_>), PoolError> {
        let uri = req.uri();
        let https = match uri.scheme_str() {
            Some("https") => true,
            Some("http") => false,
            _ => return Err(PoolError::Url),
        };
        let authority = uri.authority().ok_or(PoolError::Url)?.clone();
        let host = HeaderValue::from_str(authority.as_str()).map_err(|_| PoolError::Url)?;
        // HTTP/1.1 to an origin server: the path in the request line, the authority in Host.
        let path = uri.path_and_query().cloned().unwrap_or_else(|| PathAndQuery::from_static("/"));
        *req.uri_mut() = Uri::from(path);
        req.headers_mut().insert(header::HOST, host);
        let origin = Origin { https, authority };
        while let Some(mut tx) = self.checkout(&origin) {
            if tx.ready().await.is_err() {
                continue;
            }
            match tx.try_send_request(req).await {
                Ok(resp) => return Ok((resp, Lease { pool: self, idle: Some((origin, tx)) })),
                Err(mut e) => match e.take_message() {
                    // Not sent: the connection closed before it took the request.
                    Some(unsent) => req = unsent,
                    None => return Err(e.into_error().into()),
                },
            }
        }
        let mut tx = self.connect(&origin).await?;
        let resp = tx.send_request(req).await?;
        Ok((resp, Lease { pool: self, idle: Some((origin, tx)) }))
    }

    /// The most recently used open connection to `origin`; older idle ones are closed.
    fn checkout(&self, origin: &Origin) -> Option<SendRequest<Full<Bytes>>> {
        let mut idle = self.lock();
        while let Some(i) = idle.iter().rposition(|i| i.origin == *origin) {
            let Idle { tx, since, .. } = idle.swap_remove(i);
            if !tx.is_closed() && since.elapsed() < IDLE_TIMEOUT {
                return Some(tx);
            }
        }
        None
    }

    fn put(&self, origin: Origin, tx: SendRequest<Full<Bytes>>) {
        if tx.is_closed() {
            return;
        }
        let mut idle = self.lock();
        if idle.len() < MAX_IDLE {
            idle.push(Idle { origin, tx, since: Instant::now() });
        }
    }

    async fn connect(&self, origin: &Origin) -> Result<SendRequest<Full<Bytes>>, PoolError> {
        let host = origin.authority.host().trim_start_matches('[').trim_end_matches(']');
        let port = origin.authority.port_u16().unwrap_or(if origin.https { 443 } else { 80 });
        let tcp = tokio::time::timeout(CONNECT_TIMEOUT, tokio::net::TcpStream::connect((host, port)))
            .await
            .map_err(|_| PoolError::ConnectTimeout)?
            .map_err(PoolError::Connect)?;
        tcp.set_nodelay(true).map_err(PoolError::Connect)?;
        if origin.https {
            let name = ServerName::try_from(host.to_owned()).map_err(|_| PoolError::Url)?;
            let tls =
                tokio_rustls::TlsConnector::from(self.tls.clone()).connect(name, tcp).await.map_err(PoolError::Tls)?;
            handshake(TokioIo::new(tls)).await
        } else {
            handshake(TokioIo::new(tcp)).await
        }
    }
}

/// HTTP/1.1 over `io`; the connection runs as its own task until either side closes it.
async fn handshake<T>(io: T) -> Result<SendRequest<Full<Bytes>>, PoolError>
where
    T: hyper::rt::Read + hyper::rt::Write + Unpin + Send + 'static,
{
    let (tx, conn) = hyper::client::conn::http1::handshake(io).await?;
    tokio::spawn(async move {
        if let Err(e) = conn.await {
            tracing::debug!(target: "passerelle::upstream", error = %e, "upstream connection ended");
        }
    });
    Ok(tx)
}
