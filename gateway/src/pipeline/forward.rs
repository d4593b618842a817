//! Step 9 — forward the call to its source over a kept-alive connection (`pool`), with a
//! timeout covering the whole answer and a cap on its size. Stands after every check: nothing
//! reaches a source that the gateway would refuse.
//!
//! No retries: most calls are cheap to repeat but none is known idempotent at the source until
//! the adapters say so.

use std::time::Duration;

use bytes::Bytes;
use http::{HeaderValue, StatusCode};

use policies::model::Env;

use super::breaker::{self, Breaker, Transition};
use super::envelope::{self, Envelope, Subject};
use super::h1::{self, CallError};
use super::pool::{Pool, PoolError};
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
        // The request as it goes on the wire, in one buffer: one write.
        let method = route.method();
        let mut req = Vec::with_capacity(384 + body.len());
        h1::start_request(
            &mut req,
            method,
            upstream.target.path_and_query().map_or("/", |p| p.as_str()),
            &upstream.host,
        );
        h1::push_header(&mut req, &envelope::REQUEST_ID, request_id.as_bytes());
        h1::push_header(&mut req, &envelope::RECIPIENT, caller_kbo.as_bytes());
        h1::push_header(&mut req, &envelope::PURPOSE, env.purpose.as_bytes());
        match env.subject {
            Some(Subject::Person(n)) => {
                let mut b = [0u8; 11];
                h1::push_header(&mut req, &envelope::SUBJECT, n.digits(&mut b).as_bytes());
            }
            Some(Subject::Organisation(k)) => {
                let mut b = [0u8; 10];
                h1::push_header(&mut req, &envelope::SUBJECT, k.digits(&mut b).as_bytes());
            }
            Some(Subject::Association(v)) => {
                let mut b = [0u8; 8];
                h1::push_header(&mut req, &envelope::SUBJECT, v.text(&mut b).as_bytes());
            }
            None => {}
        }
        if let Some(tp) = traceparent {
            h1::push_header(&mut req, &envelope::TRACEPARENT, tp.as_bytes());
        }
        h1::end_request(&mut req, method, &body);
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
            let head_request = *method == http::Method::HEAD;
            let answer =
                pool.send(upstream, &req, head_request, source.max_response_bytes).await.map_err(|e| match e {
                    PoolError::Call(CallError::TooLarge(limit)) => Refusal::new(
                        Code::UpstreamAnswerTooLarge,
                        format!("source {} answered more than {limit} bytes", source.name),
                    ),
                    e => {
                        tracing::warn!(source = %source.name, error = %e, "upstream request failed");
                        let what = match e {
                            PoolError::Call(CallError::Incomplete | CallError::Read(_)) => "broke off its answer",
                            PoolError::Call(CallError::Malformed(_)) => "did not answer in HTTP/1.1",
                            _ => "cannot be reached",
                        };
                        Refusal::new(Code::UpstreamUnavailable, format!("source {} {what}", source.name))
                    }
                })?;
            Ok(UpstreamAnswer { status: answer.status, content_type: answer.content_type, body: answer.body })
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
