//! Step 9's connections: HTTP/1.1 connections to a source's upstreams, kept alive between
//! calls, each spoken on by the calling task (`h1`).
//!
//! hyper-util's pooled client, used before, keys its pool by scheme and authority hashed with
//! SipHash twice a call, wraps every request in its own futures and bookkeeping, and reads the
//! clock on every checkout and return: about 5.6 thousand instructions of the data plane's
//! 98 thousand a call (`load-tests/instructions.py`). A source has one or two upstreams (its
//! production and test sides, or a registered source's), so a pool here is a short list of
//! them, each with a stack of idle connections; a route's [`Upstream`] carries its key, its
//! address and its request target, all prepared once.
//!
//! A connection is taken back only once its answer was read whole, and only if the answer let
//! it carry another call; one the upstream closed (or wrote on unasked) is dropped when it is
//! next looked at; a request that a kept-alive connection could not take whole (the upstream
//! closed it meanwhile) is sent again on another connection, and only such a one: a request
//! the upstream may have read is never sent twice. Connections idle for [`IDLE_TIMEOUT`] are
//! closed (when next looked at, and by a sweep every [`SWEEP_EVERY`] while no call comes); at
//! most [`MAX_IDLE`] wait per upstream.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rustls::pki_types::ServerName;
use tokio::net::TcpStream;

use tokio_util::either::Either;

use super::h1::{Answer, CallError, Conn};
use super::route::Upstream;

/// How long an idle connection is kept.
pub const IDLE_TIMEOUT: Duration = Duration::from_secs(60);
/// How many idle connections wait per upstream.
pub const MAX_IDLE: usize = 256;
/// How often idle connections are looked at while no call comes.
pub const SWEEP_EVERY: Duration = Duration::from_secs(15);
/// How long opening a TCP connection may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);

/// The idle connections of one upstream, last returned on top.
struct Stack {
    key: Arc<str>,
    idle: Vec<(Conn, Instant)>,
}

/// One source's connections.
pub struct Pool {
    /// TLS towards the source's `https://` upstreams (its CA, the gateway's client
    /// certificate; or no trusted root at all, where the source has no TLS settings).
    tls: tokio_rustls::TlsConnector,
    stacks: Mutex<Vec<Stack>>,
}

impl std::fmt::Debug for Pool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let idle: Vec<(String, usize)> = self
            .stacks
            .lock()
            .map(|s| s.iter().map(|s| (s.key.to_string(), s.idle.len())).collect())
            .unwrap_or_default();
        f.debug_struct("Pool").field("idle", &idle).finish_non_exhaustive()
    }
}

/// Why a call got no answer.
#[derive(Debug, thiserror::Error)]
pub enum PoolError {
    #[error("connect: {0}")]
    Connect(std::io::Error),
    #[error("TLS: {0}")]
    Tls(std::io::Error),
    #[error("the upstream's host is not a TLS server name")]
    ServerName,
    #[error("HTTP: {0}")]
    Call(#[from] CallError),
}

impl Pool {
    /// A pool, swept by a task of the runtime it is made in (if any) for as long as it lives.
    pub fn new(tls: rustls::ClientConfig) -> Arc<Self> {
        let pool =
            Arc::new(Pool { tls: tokio_rustls::TlsConnector::from(Arc::new(tls)), stacks: Mutex::new(Vec::new()) });
        if let Ok(runtime) = tokio::runtime::Handle::try_current() {
            let weak = Arc::downgrade(&pool);
            runtime.spawn(async move {
                loop {
                    tokio::time::sleep(SWEEP_EVERY).await;
                    let Some(pool) = weak.upgrade() else { return };
                    pool.sweep(Instant::now());
                }
            });
        }
        pool
    }

    /// Closes the connections idle for [`IDLE_TIMEOUT`] or closed by their upstream.
    fn sweep(&self, now: Instant) {
        let Ok(mut stacks) = self.stacks.lock() else { return };
        for stack in stacks.iter_mut() {
            stack.idle.retain_mut(|(conn, since)| conn.is_open() && now.duration_since(*since) < IDLE_TIMEOUT);
        }
        stacks.retain(|s| !s.idle.is_empty());
    }

    /// How many connections wait, over all upstreams.
    #[cfg(test)]
    fn idle(&self) -> usize {
        self.stacks.lock().map_or(0, |s| s.iter().map(|s| s.idle.len()).sum())
    }

    /// Sends `request` (head and body as they go on the wire, its target in origin form) to
    /// `upstream` on an idle connection, or on a new one, and reads the answer, whose body may
    /// hold at most `limit` bytes. `head_request`: the method is HEAD.
    pub async fn send(
        &self,
        upstream: &Upstream,
        request: &[u8],
        head_request: bool,
        limit: usize,
    ) -> Result<Answer, PoolError> {
        while let Some(mut conn) = self.take(&upstream.key) {
            match conn.call(request, head_request, limit).await {
                Ok((answer, reusable)) => {
                    if reusable {
                        self.put(upstream, conn);
                    }
                    return Ok(answer);
                }
                // Not taken whole, so not read: safe to send on another connection.
                Err(CallError::Write(_)) => continue,
                Err(e) => return Err(e.into()),
            }
        }
        // Boxed: opening a connection (name lookup, TCP, TLS) is a large future, and inline it
        // would make every call's future as large.
        let mut conn = Box::pin(self.connect(upstream)).await?;
        let (answer, reusable) = conn.call(request, head_request, limit).await?;
        if reusable {
            self.put(upstream, conn);
        }
        Ok(answer)
    }

    /// Takes back a connection whose answer was read whole.
    fn put(&self, upstream: &Upstream, conn: Conn) {
        let now = Instant::now();
        let Ok(mut stacks) = self.stacks.lock() else { return };
        let stack = match stacks.iter().position(|s| *s.key == *upstream.key) {
            Some(i) => &mut stacks[i],
            None => {
                stacks.push(Stack { key: upstream.key.clone(), idle: Vec::new() });
                let last = stacks.len() - 1;
                &mut stacks[last]
            }
        };
        // The oldest sit at the bottom: those idle too long are closed (dropped).
        let stale = stack.idle.iter().take_while(|(_, since)| now.duration_since(*since) >= IDLE_TIMEOUT).count();
        stack.idle.drain(..stale);
        if stack.idle.len() < MAX_IDLE {
            stack.idle.push((conn, now));
        }
    }

    /// The most recently returned connection to `key` that is still open and fresh.
    fn take(&self, key: &str) -> Option<Conn> {
        let mut stacks = self.stacks.lock().ok()?;
        let stack = stacks.iter_mut().find(|s| *s.key == *key)?;
        while let Some((mut conn, since)) = stack.idle.pop() {
            if conn.is_open() && since.elapsed() < IDLE_TIMEOUT {
                return Some(conn);
            }
        }
        None
    }

    /// Opens a connection to `upstream` (TCP, then TLS for `https://`).
    async fn connect(&self, upstream: &Upstream) -> Result<Conn, PoolError> {
        let tcp = tokio::time::timeout(CONNECT_TIMEOUT, TcpStream::connect((&*upstream.addr_host, upstream.port)))
            .await
            .map_err(|_| PoolError::Connect(std::io::Error::from(std::io::ErrorKind::TimedOut)))?
            .map_err(PoolError::Connect)?;
        tcp.set_nodelay(true).map_err(PoolError::Connect)?;
        if upstream.tls {
            let name = ServerName::try_from(upstream.addr_host.to_string()).map_err(|_| PoolError::ServerName)?;
            let tls = self.tls.connect(name, tcp).await.map_err(PoolError::Tls)?;
            Ok(Conn::new(Either::Right(Box::new(tls))))
        } else {
            Ok(Conn::new(Either::Left(tcp)))
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use std::sync::atomic::{AtomicUsize, Ordering};

    use bytes::Bytes;
    use http::Response;
    use http_body_util::Full;
    use hyper_util::rt::TokioIo;

    use super::*;

    /// An upstream on a real socket that answers every request of a connection, counting its
    /// connections; or, `one_per_connection`, that answers one request per connection and then
    /// closes it without saying so in the answer.
    async fn upstream_answering(one_per_connection: bool) -> (Upstream, Arc<AtomicUsize>) {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let uri = format!("http://{}/answer", listener.local_addr().unwrap()).parse().unwrap();
        let opened = Arc::new(AtomicUsize::new(0));
        let counted = opened.clone();
        tokio::spawn(async move {
            use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
            loop {
                let Ok((mut tcp, _)) = listener.accept().await else { return };
                counted.fetch_add(1, Ordering::SeqCst);
                if one_per_connection {
                    let _ = tcp.read(&mut [0u8; 4096]).await;
                    let _ = tcp.write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok").await;
                    continue;
                }
                tokio::spawn(async move {
                    let service = hyper::service::service_fn(|_req| async {
                        Ok::<_, std::convert::Infallible>(Response::new(Full::new(Bytes::from_static(b"ok"))))
                    });
                    let _ =
                        hyper::server::conn::http1::Builder::new().serve_connection(TokioIo::new(tcp), service).await;
                });
            }
        });
        (Upstream::new(uri).unwrap(), opened)
    }

    async fn upstream() -> (Upstream, Arc<AtomicUsize>) {
        upstream_answering(false).await
    }

    fn request(u: &Upstream) -> Vec<u8> {
        let mut req = Vec::new();
        crate::pipeline::h1::start_request(&mut req, &http::Method::GET, u.target.path(), &u.host);
        crate::pipeline::h1::end_request(&mut req, &http::Method::GET, b"");
        req
    }

    async fn call(pool: &Pool, u: &Upstream) {
        let answer = pool.send(u, &request(u), false, 1024).await.unwrap();
        assert_eq!(answer.body, "ok");
    }

    fn plain() -> rustls::ClientConfig {
        rustls::ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_root_certificates(rustls::RootCertStore::empty())
            .with_no_client_auth()
    }

    #[tokio::test]
    async fn connections_are_kept_reused_and_closed_when_idle_too_long() {
        let (u, opened) = upstream().await;
        let pool = Pool::new(plain());
        // Two calls at once need two connections; both are kept.
        tokio::join!(call(&pool, &u), call(&pool, &u));
        assert_eq!((opened.load(Ordering::SeqCst), pool.idle()), (2, 2));
        // Calls one after the other reuse them.
        for _ in 0..10 {
            call(&pool, &u).await;
        }
        assert_eq!((opened.load(Ordering::SeqCst), pool.idle()), (2, 2));
        // A sweep a minute later closes both; the next call opens a new one.
        pool.sweep(Instant::now() + IDLE_TIMEOUT);
        assert_eq!(pool.idle(), 0);
        call(&pool, &u).await;
        assert_eq!((opened.load(Ordering::SeqCst), pool.idle()), (3, 1));
        // A call whose answer is not read whole (here: larger than allowed) gives no
        // connection back.
        pool.sweep(Instant::now() + IDLE_TIMEOUT);
        assert!(matches!(pool.send(&u, &request(&u), false, 1).await, Err(PoolError::Call(CallError::TooLarge(1)))));
        assert_eq!(pool.idle(), 0);
    }

    #[tokio::test]
    async fn a_connection_the_upstream_closed_while_idle_is_not_used() {
        let (u, opened) = upstream_answering(true).await;
        let pool = Pool::new(plain());
        for n in 1..=3 {
            call(&pool, &u).await;
            // Kept (the answer allowed it) until the upstream's close is seen.
            let deadline = Instant::now() + std::time::Duration::from_secs(5);
            while pool.stacks.lock().unwrap()[0].idle.iter_mut().all(|(c, _)| c.is_open()) && Instant::now() < deadline
            {
                tokio::time::sleep(std::time::Duration::from_millis(5)).await;
            }
            assert_eq!(opened.load(Ordering::SeqCst), n);
        }
        pool.sweep(Instant::now());
        assert_eq!(pool.idle(), 0);
    }

    #[tokio::test]
    async fn an_https_upstream_the_pool_does_not_trust_is_refused() {
        let (plain_upstream, _) = upstream().await;
        let https: http::Uri = plain_upstream.uri.to_string().replacen("http://", "https://", 1).parse().unwrap();
        let u = Upstream::new(https).unwrap();
        let pool = Pool::new(plain());
        assert!(matches!(pool.send(&u, &request(&u), false, 1024).await, Err(PoolError::Tls(_))));
        assert_eq!(pool.idle(), 0);
    }
}
