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
