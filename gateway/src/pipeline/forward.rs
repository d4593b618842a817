//! Step 9 — forward the call to its source over a kept-alive connection (`pool`), with a
//! timeout covering the whole answer and a cap on its size. Stands after every check: nothing
//! reaches a source that the gateway would refuse.
//!
//! No retries: most calls are cheap to repeat but none is known idempotent at the source until
//! the adapters say so.

use std::time::Duration;

use bytes::Bytes;
use http::{HeaderValue, Request, StatusCode, header};
use http_body_util::{BodyExt, Full, Limited};

use policies::model::Env;

use super::breaker::{self, Breaker, Transition};
use super::envelope::{self, Envelope, Subject};
use super::pool::Pool;
use super::route::Route;
use crate::error::{Code, Refusal};

/// Runtime settings of one upstream source.
#[derive(Debug, Clone)]
pub struct Source {
    pub name: String,
    pub timeout: Duration,
    pub max_response_bytes: usize,
    pub breaker: breaker::Settings,
    /// TLS towards the source (its CA, the gateway's client certificate); `None`: plain HTTP
    /// only, an `https://` URL fails rather than trusting any certificate.
    pub tls: Option<rustls::ClientConfig>,
}

/// The upstream side: one connection pool per source (each source may want its own client
/// certificate).
#[derive(Debug)]
pub struct Upstreams {
    pools: Vec<std::sync::Arc<Pool>>,
    /// Per source: the production side's breaker, then the test side's.
    breakers: Vec<[Breaker; 2]>,
    circuit_open: prometheus::IntGaugeVec,
    pub sources: Vec<Source>,
}

fn pool_for(source: &Source) -> std::sync::Arc<Pool> {
    // Without TLS settings, a client that trusts nothing: `https://` cannot succeed by accident.
    let tls = source.tls.clone().unwrap_or_else(|| {
        rustls::ClientConfig::builder_with_provider(std::sync::Arc::new(rustls::crypto::ring::default_provider()))
            .with_safe_default_protocol_versions()
            .map(|b| b.with_root_certificates(rustls::RootCertStore::empty()).with_no_client_auth())
            .unwrap_or_else(|_| unreachable!("ring supports the default protocol versions"))
    });
    Pool::new(tls)
}

/// What the source answered.
#[derive(Debug)]
pub struct UpstreamAnswer {
    pub status: StatusCode,
    pub content_type: Option<HeaderValue>,
    pub body: Bytes,
}

impl Upstreams {
    pub fn new(sources: Vec<Source>, circuit_open: prometheus::IntGaugeVec) -> Self {
        for s in &sources {
            for side in SIDES {
                circuit_open.with_label_values(&[s.name.as_str(), side]).set(0);
            }
        }
        Upstreams {
            pools: sources.iter().map(pool_for).collect(),
            breakers: sources.iter().map(|s| [Breaker::new(s.breaker), Breaker::new(s.breaker)]).collect(),
            circuit_open,
            sources,
        }
    }

    /// Whether the circuit of this source side is open (for tests and readiness).
    pub fn circuit_open(&self, source: usize, environment: Env) -> bool {
        self.breakers[source][side(environment)].is_open()
    }

    /// Calls the route's source — its test side for a test-environment call, its production
    /// side otherwise. `caller_kbo` tells the source which organisation receives the data;
    /// `request_id` and the trace context follow the call.
    #[allow(clippy::too_many_arguments)]
    pub async fn call(
        &self,
        route: &Route,
        environment: Env,
        env: &Envelope<'_>,
        caller_kbo: &str,
        request_id: &HeaderValue,
        traceparent: Option<String>,
        body: Bytes,
    ) -> Result<UpstreamAnswer, Refusal> {
        if let (Env::Test, Some((body, content_type))) = (environment, &route.sandbox) {
            return Ok(UpstreamAnswer {
                status: StatusCode::OK,
                content_type: Some(content_type.clone()),
                body: body.clone(),
            });
        }
        let source = &self.sources[route.source];
        let side = side(environment);
        let upstream = match environment {
            Env::Production => &route.upstream,
            Env::Test => route.test_upstream.as_ref().ok_or_else(|| {
                Refusal::new(Code::UpstreamUnavailable, format!("source {} has no test environment here", source.name))
            })?,
        };
        let mut req = Request::new(Full::new(body));
        *req.method_mut() = route.method().clone();
        *req.uri_mut() = upstream.target.clone();
        let h = req.headers_mut();
        // The connections speak HTTP/1.1 only: `Host` names the upstream.
        h.insert(http::header::HOST, upstream.host.clone());
        h.insert(envelope::REQUEST_ID, request_id.clone());
        h.insert(envelope::RECIPIENT, hv(caller_kbo));
        h.insert(envelope::PURPOSE, hv(env.purpose));
        match env.subject {
            Some(Subject::Person(n)) => {
                let mut b = [0u8; 11];
                h.insert(envelope::SUBJECT, hv(n.digits(&mut b)));
            }
            Some(Subject::Organisation(k)) => {
                let mut b = [0u8; 10];
                h.insert(envelope::SUBJECT, hv(k.digits(&mut b)));
            }
            Some(Subject::Association(v)) => {
                let mut b = [0u8; 8];
                h.insert(envelope::SUBJECT, hv(v.text(&mut b)));
            }
            None => {}
        }
        if let Some(tp) = traceparent {
            h.insert(envelope::TRACEPARENT, hv(&tp));
        }
        let pass = self.breakers[route.source][side].admit().map_err(|wait| {
            Refusal::new(
                Code::UpstreamCircuitOpen,
                format!(
                    "source {} failed {} calls in a row; calls are paused, next try in {} ms",
                    source.name,
                    source.breaker.failures,
                    wait.as_millis()
                ),
            )
        })?;
        let fut = async {
            let pool = &self.pools[route.source];
            let (resp, conn) = pool.send(upstream, req).await.map_err(|e| {
                tracing::warn!(source = %source.name, error = %e, "upstream request failed");
                Refusal::new(Code::UpstreamUnavailable, format!("source {} cannot be reached", source.name))
            })?;
            let (parts, body) = resp.into_parts();
            let body = Limited::new(body, source.max_response_bytes).collect().await.map_err(|e| {
                if e.is::<http_body_util::LengthLimitError>() {
                    Refusal::new(
                        Code::UpstreamAnswerTooLarge,
                        format!("source {} answered more than {} bytes", source.name, source.max_response_bytes),
                    )
                } else {
                    Refusal::new(Code::UpstreamUnavailable, format!("source {} broke off its answer", source.name))
                }
            })?;
            // Read whole: the connection can carry the next call.
            pool.put(upstream, conn);
            Ok(UpstreamAnswer {
                status: parts.status,
                content_type: parts.headers.get(header::CONTENT_TYPE).cloned(),
                body: body.to_bytes(),
            })
        };
        let answer = tokio::time::timeout(source.timeout, fut)
            .await
            .map_err(|_| {
                Refusal::new(
                    Code::UpstreamTimeout,
                    format!("source {} did not answer within {} ms", source.name, source.timeout.as_millis()),
                )
            })
            .and_then(|r| r)
            .and_then(|answer| {
                let s = answer.status;
                if s.is_server_error() || s.is_informational() || s.is_redirection() {
                    return Err(Refusal::new(
                        Code::UpstreamUnavailable,
                        format!("source {} answered HTTP {}", source.name, s.as_u16()),
                    ));
                }
                Ok(answer)
            });
        // Only a source that did not answer counts against it; an answer that is too large,
        // or outside the layout (checked after this), shows the source is up.
        let down = matches!(&answer, Err(r) if matches!(r.code, Code::UpstreamUnavailable | Code::UpstreamTimeout));
        let transition = if down { pass.failed() } else { pass.succeeded() };
        if let Some(t) = transition {
            let open = t == Transition::Opened;
            self.circuit_open.with_label_values(&[source.name.as_str(), SIDES[side]]).set(i64::from(open));
            if open {
                tracing::warn!(source = %source.name, side = SIDES[side], "circuit opened: calls to the source are paused");
            } else {
                tracing::info!(source = %source.name, side = SIDES[side], "circuit closed: the source answers again");
            }
        }
        answer
    }
}

/// Breaker sides, as metric labels, indexed by [`side`].
const SIDES: [&str; 2] = ["production", "test"];

fn side(environment: Env) -> usize {
    match environment {
        Env::Production => 0,
        Env::Test => 1,
    }
}

/// A header value from text that is known to be visible ASCII (digits, checked envelope
/// values); anything else becomes an empty value rather than a panic.
pub(crate) fn hv(s: &str) -> HeaderValue {
    HeaderValue::from_str(s).unwrap_or(HeaderValue::from_static(""))
}
