//! Step 2 — limits. Stands before any parsing so that an overloaded gateway sheds a request
//! before spending work on it, and an oversized body is refused before it is read.
//!
//! Header size and header read time are enforced by hyper (see `server.rs`); here: the
//! in-flight limit (load shedding) and the body size announced by `Content-Length`. The body
//! itself is read later, only once the call is authorized, under the same size limit and a
//! read timeout ([`read_body`]).

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::HeaderMap;
use http_body_util::{BodyExt, Limited};
use hyper::body::Incoming;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use crate::error::{Code, Refusal};

#[derive(Debug)]
pub struct Limits {
    in_flight: Arc<Semaphore>,
    pub max_body_bytes: usize,
    pub body_read_timeout: Duration,
}

impl Limits {
    pub fn new(cfg: &crate::config::Limits) -> Self {
        Limits {
            in_flight: Arc::new(Semaphore::new(cfg.max_in_flight)),
            max_body_bytes: cfg.max_body_bytes,
            body_read_timeout: cfg.body_read_timeout(),
        }
    }

    /// Takes an in-flight slot, or sheds the request.
    pub fn admit(&self) -> Result<OwnedSemaphorePermit, Refusal> {
        self.in_flight
            .clone()
            .try_acquire_owned()
            .map_err(|_| Refusal::new(Code::Overloaded, "too many requests in flight"))
    }

    /// Refuses a body whose announced length is over the limit.
    pub fn check_announced(&self, headers: &HeaderMap) -> Result<(), Refusal> {
        let Some(v) = headers.get(http::header::CONTENT_LENGTH) else { return Ok(()) };
        // hyper has already rejected a malformed Content-Length; this parse cannot fail then.
        let len: u64 = v.to_str().ok().and_then(|s| s.parse().ok()).unwrap_or(u64::MAX);
        if len > self.max_body_bytes as u64 {
            return Err(self.too_large());
        }
        Ok(())
    }

    fn too_large(&self) -> Refusal {
        Refusal::new(Code::BodyTooLarge, format!("the request body exceeds {} bytes", self.max_body_bytes))
    }

    /// Reads the whole body under the size limit and the read timeout.
    pub async fn read_body(&self, body: Incoming) -> Result<Bytes, Refusal> {
        let limited = Limited::new(body, self.max_body_bytes);
        match tokio::time::timeout(self.body_read_timeout, limited.collect()).await {
            Err(_) => Err(Refusal::new(Code::RequestTimeout, "the request body was not received in time")),
            Ok(Err(e)) if e.is::<http_body_util::LengthLimitError>() => Err(self.too_large()),
            Ok(Err(_)) => Err(Refusal::new(Code::EnvelopeInvalid, "the request body could not be read")),
            Ok(Ok(c)) => Ok(c.to_bytes()),
        }
    }
}
