//! The data plane: a request's way through the gateway, one file per concern, run in the
//! order of DESIGN.md by [`Pipeline::handle`].
//!
//! The steps are plain functions over a per-request context rather than one tower layer each:
//! the context (caller, route, envelope, request id, what the audit record needs) is borrowed
//! from step to step instead of being boxed into request extensions, every step is statically
//! dispatched, and the order is visible in one function. Steps that later issues fill are
//! marked in their files.

pub mod audit;
pub mod authorize;
pub mod breaker;
pub mod consent;
pub mod envelope;
pub mod forward;
pub mod h1;
pub mod identity;
pub mod layout;
pub mod limits;
pub mod pool;
pub mod rate;
pub mod route;

use std::sync::Arc;
use std::time::Instant;

use http::{HeaderValue, Request, Response, header};
use http_body_util::Full;
use hyper::body::Incoming;

use self::audit::Trace;
use self::envelope::{Envelope, RequestIds};
use self::forward::Upstreams;
use self::identity::Caller;
use self::limits::Limits;
use self::route::Table;
use crate::audit::AuditTrail;
use crate::consent::Registry;
use crate::error::{self, Body, Code, Dialect, Refusal};
use crate::policy::PolicyHandle;

/// Everything the data plane needs to answer a request; shared by all connections.
#[derive(Debug)]
pub struct Pipeline {
    pub policy: Arc<PolicyHandle>,
    pub limits: Limits,
    pub routes: Table,
    pub upstreams: Upstreams,
    pub ids: RequestIds,
    pub audit: Arc<AuditTrail>,
    pub consent: Arc<Registry>,
    pub rate: rate::RateLimiter,
    pub metrics: crate::metrics::Metrics,
    /// A replica of a shared store: out of sync, it decides nothing.
    pub sync: Option<Arc<crate::store::postgres::SyncState>>,
    /// The services registered in the policy, consulted after the built-in routes.
    pub registered: Arc<crate::registered::Keeper>,
}

impl Pipeline {
    /// Answers one request. Never fails: every refusal becomes a response in the service's
    /// dialect, echoing the request id; every call, answered or refused, leaves exactly one
    /// durable audit record before its response does.
    pub async fn handle(self: &Arc<Self>, req: Request<Incoming>, caller: &Caller) -> Response<Body> {
        // A registered service's description (`GET <path>?wsdl`, `GET <path>?openapi`): no
        // data, no legal basis, no audit record.
        if req.method() == http::Method::GET
            && let Some(kind) = match req.uri().query() {
                Some("wsdl") => Some(crate::registered::Description::Wsdl),
                Some("openapi") => Some(crate::registered::Description::OpenApi),
                _ => None,
            }
            && let Some((body, ct)) =
                self.registered.plane.load().describe(req.uri().path(), kind, &crate::registered::base_url(&req, None))
        {
            let mut resp = Response::new(Full::new(bytes::Bytes::from(body)));
            resp.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static(ct));
            return resp;
        }
        let started = Instant::now();
        let coming = self.audit.expect();
        let mut trace = Trace::start();
        // The head stays here, for the audit record to read what the caller sent.
        let (head, body) = req.into_parts();
        let (request_id, early) = match self.ids.take(&head.headers) {
            Ok(id) => (id, None),
            Err((id, refusal)) => (id, Some(refusal)),
        };
        let mut ran = Ran { dialect: Dialect::Json, done: None };
        let result = match early {
            Some(r) => Err(r),
            None => self.run(&head, body, caller, &request_id, &mut ran, &mut trace).await,
        };
        let dialect = ran.dialect;
        let rid = request_id.to_str().unwrap_or("");
        let (mut resp, code) = match result {
            Ok(resp) => (resp, None),
            Err(refusal) => (error::respond(&refusal, dialect, rid), Some(refusal.code)),
        };
        // Metric labels: an enterprise number only for registered organisations (bounded),
        // the digits the connection worked out once.
        let service = trace.service_label();
        let caller_label = match (caller.identity.as_ref(), caller.kbo_text()) {
            (Ok(id), Some(digits)) if self.policy.guard().organisation(id.kbo).is_some() => digits,
            _ => "unregistered",
        };
        // 11. Audit: the record is durable before the response leaves; if it cannot be
        //     written the call fails closed and no data leaves.
        let t = ran.done.unwrap_or_else(Instant::now);
        let record = trace.finish(caller, &head, rid, resp.status().as_u16(), code, t - started);
        drop(trace);
        let mut code = code;
        if self.audit.append_coming(record, coming).await.is_err() {
            let refusal =
                Refusal::new(Code::AuditUnavailable, "the call could not be recorded, so nothing is released");
            resp = error::respond(&refusal, dialect, rid);
            code = Some(Code::AuditUnavailable);
            tracing::warn!(request_id = rid, "audit trail unavailable: answer withheld");
        }
        let ended = Instant::now();
        self.metrics.stages.audit.observe((ended - t).as_secs_f64());
        let outcome = if code.is_none() { "granted" } else { "refused" };
        let code_label = code.map_or("", Code::as_str);
        let elapsed = ended - started;
        self.metrics.count_call(&caller.last_call, [service, caller_label, outcome, code_label], elapsed.as_secs_f64());
        // One line per call; never a subject, a body or a personal identifier.
        tracing::info!(
            target: "passerelle::request",
            request_id = rid,
            service,
            caller = caller_label,
            outcome,
            code = code_label,
            status = resp.status().as_u16(),
            latency_us = elapsed.as_micros() as u64,
            "call"
        );
        resp.headers_mut().insert(envelope::REQUEST_ID, request_id);
        resp
    }

    async fn run(
        &self,
        head: &http::request::Parts,
        body: Incoming,
        caller: &Caller,
        request_id: &HeaderValue,
        ran: &mut Ran,
        trace: &mut Trace,
    ) -> Result<Response<Body>, Refusal> {
        // The service, looked up first only so that every refusal, including those of the
        //    steps before the route's own (identity, limits), speaks the service's dialect: a
        //    SOAP Fault for an XML service. Its own refusal comes in step 3.
        let mut looked_up = self.routes.lookup(&head.method, head.uri.path());
        let mut upstreams = &self.upstreams;
        // A path the built-in table does not know may be a registered service's: the plane in
        // force when the request got here serves it to the end.
        let plane = matches!(looked_up, Err((_, None))).then(|| self.registered.plane.load_full());
        if let Some(plane) = &plane
            && let found @ (Ok(_) | Err((_, Some(_)))) = plane.table.lookup(&head.method, head.uri.path())
        {
            looked_up = found;
            upstreams = &plane.upstreams;
        }
        if let Ok(route) | Err((_, Some(route))) = &looked_up {
            ran.dialect = route.dialect();
            trace.service(route.service.id);
        }
        // 1. Identity: read once per connection; a certificate without a valid enterprise
        //    number is refused on every request.
        let org = caller.org()?;
        if self.sync.as_ref().is_some_and(|s| !s.in_sync()) {
            return Err(Refusal::new(
                Code::StoreUnavailable,
                "this replica has lost the shared store and decides nothing until it has re-read it",
            ));
        }
        let environment = authorize::environment(org);
        trace.environment(environment);
        // 2. Limits: shed before doing any work; refuse an announced oversized body unread.
        let _permit = self.limits.admit()?;
        self.limits.check_announced(&head.headers)?;
        // 3. Route.
        let route = looked_up.map_err(|(refusal, _)| refusal)?;
        // 4. Envelope.
        trace.envelope_raw();
        let env = Envelope::parse(&head.headers, route.subject())?;
        trace.envelope(&env);
        // 5. Authorize: the snapshot in force when the request got here decides, at one time
        //    read once for both this step and the consent's: the time the call was received.
        //    (Each stage's end is read once and is the next one's start.)
        let stages = &self.metrics.stages;
        let now_ms = self.policy.at_ms(trace.time_ms());
        let t = Instant::now();
        let snapshot = self.policy.guard();
        // The consent check's memory (step 6) is asked for now and arrives while the call is
        // authorised: at ten million consents it is not in the cache.
        if let Some(envelope::Subject::Person(niss)) = env.subject {
            let kind = snapshot.organisation(org.kbo).map(|o| o.kind);
            self.consent.prefetch(niss, org.kbo, kind, route.service.id);
        }
        let decided = authorize::authorize(&snapshot, org, caller.peer.ip(), route, &env, (now_ms / 1000) as i64);
        trace.decision(&snapshot, &decided);
        let authorised = Instant::now();
        stages.authorize.observe((authorised - t).as_secs_f64());
        let permit = decided?;
        // 6. Consent.
        let consent_id = consent::check(&self.consent, &snapshot, &permit, org, route.service.id, &env, now_ms);
        if permit.consent_required {
            stages.consent.observe(authorised.elapsed().as_secs_f64());
            let c = &self.metrics.consent_checks;
            match &consent_id {
                Ok(_) => c.valid.inc(),
                Err(r) if r.code == Code::ConsentRevoked => c.revoked.inc(),
                Err(r) if r.code == Code::ConsentExpired => c.expired.inc(),
                Err(_) => c.missing.inc(),
            }
        }
        let consent_id = consent_id?;
        trace.consent(consent_id);
        drop(snapshot);
        // 7. Rate: the grant's periodicity, per calling organisation (at the decision's time:
        //    what happened since is a fraction of a microsecond).
        if let Some(key) = &permit.rate {
            self.rate.take(key, authorised)?;
        }
        // 8. Layout in — the body is read only now, for an authorized call. (An empty body's
        //    check is not timed.)
        let body = self.limits.read_body(body).await?;
        let t = (!body.is_empty()).then(Instant::now);
        let request = layout::check_request(route, &body)?;
        // 9. Forward.
        let forwarded = Instant::now();
        let layout_in = t.map_or(std::time::Duration::ZERO, |t| forwarded - t);
        let traceparent = env.traceparent.map(|tp| tp.child(self.ids.span_id()));
        let mut kbo = [0u8; 10];
        let answer = upstreams
            .call(route, environment, &env, org.kbo.digits(&mut kbo), request_id, traceparent, body)
            .await
            .inspect_err(|r| {
                let kind = match r.code {
                    Code::UpstreamTimeout => "timeout",
                    Code::UpstreamCircuitOpen => "circuit_open",
                    Code::UpstreamAnswerTooLarge => "too_large",
                    _ => "unavailable",
                };
                self.metrics.upstream_errors.with_label_values(&[route.service.source, kind]).inc();
            })?;
        let answered = Instant::now();
        stages.upstream.observe((answered - forwarded).as_secs_f64());
        trace.upstream(answer.status.as_u16());
        // 10. Layout out + minimisation: a non-conforming answer never leaves; a conforming one
        //     leaves with the granted fields only.
        let scope = layout::ConsentScope { registry: &self.consent, consent: consent_id };
        let answer = layout::check_and_minimise(route, &request, answer, trace, scope).inspect_err(|r| {
            if r.code == Code::UpstreamLayoutViolation {
                self.metrics.upstream_errors.with_label_values(&[route.service.source, "layout"]).inc();
            }
        })?;
        let done = Instant::now();
        stages.layout.observe((done - answered + layout_in).as_secs_f64());
        ran.done = Some(done);
        // 12. Respond (after the audit step in `handle`).
        Ok(respond(answer))
    }
}

/// What [`Pipeline::run`] leaves besides its result.
struct Ran {
    /// The dialect the call's refusals speak (the service's, once its route is known).
    dialect: Dialect,
    /// When the last stage ended, if the call went through all of them.
    done: Option<Instant>,
}

fn respond(answer: forward::UpstreamAnswer) -> Response<Body> {
    let mut resp = Response::new(Full::new(answer.body));
    *resp.status_mut() = answer.status;
    if let Some(ct) = answer.content_type {
        resp.headers_mut().insert(header::CONTENT_TYPE, ct);
    }
    resp
}
