//! A small real HTTP/1.1 server for sandbox sources: each sandbox supplies a handler, this
//! module accepts connections on a listener the caller bound (often port 0) and serves it.

use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;

use bytes::Bytes;
use http::{Request, Response, StatusCode, header};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::net::TcpListener;
use tokio::task::JoinHandle;

/// A request as a sandbox handler sees it: head and the whole body.
pub type SandboxRequest = Request<Bytes>;
pub type SandboxResponse = Response<Full<Bytes>>;

/// A running sandbox server; dropping it does not stop it, [`SandboxServer::abort`] does.
#[derive(Debug)]
pub struct SandboxServer {
    pub addr: SocketAddr,
    task: JoinHandle<()>,
}

impl SandboxServer {
    /// Base URL, e.g. `http://127.0.0.1:40123`.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    pub fn abort(&self) {
        self.task.abort();
    }

    /// One request on a fresh connection, as a source's client sends it (tests and benches
    /// record answers this way): `GET` without a body, `POST` with one, the subject in
    /// `X-Subject`. Returns the status and the body.
    pub async fn call(&self, path: &str, subject: Option<&str>, body: &str) -> std::io::Result<(u16, Vec<u8>)> {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let mut stream = tokio::net::TcpStream::connect(self.addr).await?;
        let method = if body.is_empty() { "GET" } else { "POST" };
        let subject = subject.map(|s| format!("X-Subject: {s}\r\n")).unwrap_or_default();
        let req = format!(
            "{method} {path} HTTP/1.1\r\nHost: x\r\n{subject}Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
            body.len()
        );
        stream.write_all(req.as_bytes()).await?;
        let mut buf = Vec::new();
        stream.read_to_end(&mut buf).await?;
        let bad = || std::io::Error::new(std::io::ErrorKind::InvalidData, "not an HTTP/1.1 answer");
        let status = buf.get(9..12).and_then(|s| std::str::from_utf8(s).ok()?.parse().ok()).ok_or_else(bad)?;
        let at = buf.windows(4).position(|w| w == b"\r\n\r\n").ok_or_else(bad)?;
        Ok((status, buf[at + 4..].to_vec()))
    }
}

/// Serves `handler` on `listener` until aborted.
pub fn serve<F, Fut>(listener: TcpListener, handler: F) -> std::io::Result<SandboxServer>
where
    F: Fn(SandboxRequest) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = SandboxResponse> + Send + 'static,
{
    let addr = listener.local_addr()?;
    let handler = Arc::new(handler);
    let task = tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else { continue };
            let _ = stream.set_nodelay(true);
            let handler = handler.clone();
            tokio::spawn(async move {
                let svc = hyper::service::service_fn(move |req: Request<Incoming>| {
                    let handler = handler.clone();
                    async move {
                        let (parts, body) = req.into_parts();
                        let body = match body.collect().await {
                            Ok(b) => b.to_bytes(),
                            Err(_) => return Ok::<_, Infallible>(text(StatusCode::BAD_REQUEST, "unreadable body")),
                        };
                        Ok(handler(Request::from_parts(parts, body)).await)
                    }
                });
                let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                    .serve_connection(TokioIo::new(stream), svc)
                    .await;
            });
        }
    });
    Ok(SandboxServer { addr, task })
}

/// A JSON answer.
pub fn json(status: StatusCode, value: &serde_json::Value) -> SandboxResponse {
    let mut r = Response::new(Full::new(Bytes::from(value.to_string())));
    *r.status_mut() = status;
    r.headers_mut().insert(header::CONTENT_TYPE, http::HeaderValue::from_static("application/json"));
    r
}

/// An XML answer (SOAP sources).
pub fn xml(status: StatusCode, body: String) -> SandboxResponse {
    let mut r = Response::new(Full::new(Bytes::from(body)));
    *r.status_mut() = status;
    r.headers_mut().insert(header::CONTENT_TYPE, http::HeaderValue::from_static("text/xml; charset=utf-8"));
    r
}

/// A plain-text answer (sandbox errors).
pub fn text(status: StatusCode, msg: &'static str) -> SandboxResponse {
    let mut r = Response::new(Full::new(Bytes::from_static(msg.as_bytes())));
    *r.status_mut() = status;
    r.headers_mut().insert(header::CONTENT_TYPE, http::HeaderValue::from_static("text/plain"));
    r
}
