//! The control plane (mTLS, its own listener): today the audit trail's two readers.
//!
//! * `POST /audit/queries` — the a-posteriori control by a designated person, through an
//!   organisation listed in `control.auditors`. Every query carries a justification (case
//!   reference and legal ground) and becomes an audit record itself, durable before any result
//!   is returned (DOMAIN.md §7, seed 004 §6).
//! * `GET /audit/report` with `X-Subject: <NISS>` — the data subject's "who consulted my data",
//!   served to a citizen access point (an organisation of that kind in the policy) acting for the
//!   authenticated citizen. It lists data-plane calls about the person, granted and refused; it
//!   does not show audit queries (a judicial inquiry is not disclosed this way) nor the officials'
//!   identities. The report request is itself audited.
//!
//! * Consents, for a citizen access point (acting for the citizen) and for the integrator's
//!   administrators (recording a consent given through an instance):
//!   `POST /consents`, `POST /consents/{id}/revoke`, `POST /consents/{id}/revalidate`,
//!   `GET /consents` with `X-Subject` (the subject's consents with their history). A change is
//!   durable and in force for the data plane when it is answered.
//!
//! * Flow management ([`flows`]): organisations, sources, services, instruments and their
//!   lifecycles, adhesions, roles, exceptional accesses, the change history, bundle
//!   import/export.
//!
//! The routes are a table ([`routes::ROUTES`]) described by the OpenAPI document served at
//! `GET /openapi.json` (kept in the repository as `gateway/openapi.json`). Errors are
//! `application/problem+json` with a stable code.

pub mod authority;
pub mod flows;
pub mod inquiries;
pub mod procedures;
pub mod routes;

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{Request, Response, StatusCode, header};
use http_body_util::{BodyExt, Full, Limited};
use policies::ids::{Kbo, Niss, VCode};
use policies::model::OrgKind;
use serde::{Deserialize, Serialize};

use crate::audit::index::{AuditIndex, Selector, read_record};
use crate::audit::record::StoredRecord;
use crate::audit::{AuditTrail, Record, RecordKind, SubjectRef};
use crate::config::ControlConfig;
use crate::consent::{ChangeError, Invalid, NewConsent, Registry};
use crate::error::{self, Body, Code, Dialect, Refusal};
use crate::pipeline::identity::Caller;
use crate::policy::{Changes, PolicyHandle};

const MAX_BODY: usize = 16 * 1024;
/// A bundle import may be larger than the other bodies.
const MAX_IMPORT: usize = 4 * 1024 * 1024;
/// The OpenAPI 3.1 document of this API.
pub const OPENAPI: &str = include_str!("../../openapi.json");
const MAX_RESULTS: usize = 10_000;

/// The body of a control-plane request: the connection's, or the one the console builds from
/// a submitted form ([`crate::console`]) — both go through [`ControlPlane::call`].
pub type ReqBody = http_body_util::combinators::BoxBody<Bytes, hyper::Error>;

/// What a control-plane call needs.
#[derive(Debug)]
pub struct ControlPlane {
    changes: Arc<Changes>,
    reloader: Arc<crate::reload::Reloader>,
    policy: Arc<PolicyHandle>,
    audit: Arc<AuditTrail>,
    index: Arc<dyn AuditIndex>,
    auditors: HashSet<Kbo>,
    /// The CA that signs organisations' requests, with the validity it gives (days).
    issuer: Option<(certs::CsrSigner, u32)>,
    consent: Arc<Registry>,
    /// Where the a-posteriori control keeps its requesters and inquiries.
    store: Arc<dyn crate::store::Store>,
    ids: crate::pipeline::envelope::RequestIds,
    /// Readiness and the last hour of the data plane (`GET /activity`).
    ops: Arc<crate::ops::Ops>,
}

/// The body of an audit query.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Query {
    /// A NISS/BIS, an enterprise number or a vCode: the records about this subject.
    subject: Option<String>,
    /// An enterprise number: the records of calls made by this organisation.
    caller: Option<String>,
    /// RFC 3339 times bounding the records' time (inclusive).
    from: Option<String>,
    to: Option<String>,
    /// At most this many records a page (1,000 when absent, at most 10,000).
    limit: Option<u64>,
    /// The `next_cursor` of the previous page.
    cursor: Option<String>,
    justification: Option<Justification>,
}

/// The justification of a query of the trail: what a designated person's form states.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Justification {
    /// The documented request: a case or file reference.
    pub case_reference: String,
    /// The legal ground of the query.
    pub legal_ground: String,
    /// The apostille's number or another reference of the legal act (required of the police
    /// in an inquiry).
    #[serde(default)]
    pub legal_reference: Option<String>,
    /// Who asks (the prosecutor, the DPO, …), as documented in the request.
    pub requested_by: String,
}

impl Justification {
    /// The justification, when it states a case reference, a legal ground and who asks.
    fn required(j: Option<Justification>) -> Result<Justification, Refusal> {
        j.filter(|j| {
            !j.case_reference.trim().is_empty()
                && !j.legal_ground.trim().is_empty()
                && !j.requested_by.trim().is_empty()
        })
        .ok_or_else(|| {
            refuse(
                Code::JustificationMissing,
                "justification.case_reference, justification.legal_ground and justification.requested_by are required",
            )
        })
    }
}

fn refuse(code: Code, detail: impl Into<std::borrow::Cow<'static, str>>) -> Refusal {
    Refusal::new(code, detail)
}

pub(crate) fn json(status: StatusCode, v: &serde_json::Value) -> Response<Body> {
    let mut r = Response::new(Full::new(Bytes::from(v.to_string())));
    *r.status_mut() = status;
    r.headers_mut().insert(header::CONTENT_TYPE, http::HeaderValue::from_static("application/json"));
    r
}

/// Unix milliseconds as an RFC 3339 time, as answers show times.
pub(crate) fn rfc3339(ms: u64) -> Option<String> {
    time::OffsetDateTime::from_unix_timestamp_nanos(i128::from(ms) * 1_000_000)
        .ok()
        .and_then(|t| t.format(&time::format_description::well_known::Rfc3339).ok())
}

/// The records a page of an audit read holds: `limit` as asked (1,000 when absent), refused
/// outside 1..=10,000.
fn page_limit(limit: Option<u64>) -> Result<usize, Refusal> {
    match limit.unwrap_or(1_000) {
        n @ 1..=10_000 => Ok(n as usize),
        _ => Err(refuse(Code::RequestInvalid, "limit must be between 1 and 10000")),
    }
}

fn time_ms(s: &str, what: &str) -> Result<u64, Refusal> {
    let t = time::OffsetDateTime::parse(s, &time::format_description::well_known::Rfc3339)
        .map_err(|_| refuse(Code::RequestInvalid, format!("{what} must be an RFC 3339 time")))?;
    // The trail begins after 1970: an earlier bound is the beginning.
    Ok(u64::try_from(t.unix_timestamp_nanos() / 1_000_000).unwrap_or(0))
}

fn subject_ref(s: &str) -> Result<SubjectRef, Refusal> {
    if let Ok(n) = Niss::parse(s) {
        let mut b = [0u8; 11];
        return Ok(SubjectRef::Person(n.digits(&mut b).to_owned()));
    }
    if let Ok(k) = Kbo::parse(s) {
        let mut b = [0u8; 10];
        return Ok(SubjectRef::Organisation(k.digits(&mut b).to_owned()));
    }
    if let Ok(v) = VCode::parse(s) {
        return Ok(SubjectRef::Association(v.to_string()));
    }
    Err(refuse(Code::SubjectInvalid, "subject must be a NISS/BIS number, an enterprise number or a vCode"))
}

/// What a query selects: the records about a subject, those of a calling organisation, or
/// all in the time range; and the subjects its own record names.
fn selector(subject: Option<&str>, caller: Option<&str>) -> Result<(Selector, Vec<SubjectRef>), Refusal> {
    match (subject, caller) {
        (Some(s), None) => {
            let r = subject_ref(s)?;
            Ok((Selector::Subject(r.index_key()), vec![r]))
        }
        (None, Some(c)) => {
            let k = Kbo::parse(c).map_err(|e| refuse(Code::RequestInvalid, format!("caller: {e}")))?;
            let mut d = [0u8; 10];
            Ok((Selector::Caller(k.digits(&mut d).to_owned()), vec![]))
        }
        (None, None) => Ok((Selector::Time, vec![])),
        (Some(_), Some(_)) => Err(refuse(Code::RequestInvalid, "give either subject or caller, not both")),
    }
}

/// The citizen named in `X-Subject`, as 11 digits.
fn citizen(req: &Request<ReqBody>) -> Result<String, Refusal> {
    let raw = req
        .headers()
        .get("x-subject")
        .and_then(|v| v.to_str().ok())
        .ok_or_else(|| refuse(Code::SubjectInvalid, "header x-subject (the citizen's NISS) is required"))?;
    let niss = Niss::parse(raw).map_err(|e| refuse(Code::SubjectInvalid, e.to_string()))?;
    let mut b = [0u8; 11];
    Ok(niss.digits(&mut b).to_owned())
}

/// The system clock, in Unix milliseconds.
pub(crate) fn now_ms() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64)
}

/// Where the next page of an audit query starts: the time of the last record delivered, how
/// many records of that millisecond were delivered, and the bound of the first page (this
/// gateway's records from that sequence number on are left out, so later pages do not grow
/// with the queries' own records). Written `<time_ms>.<count>.<bound>`, opaque to the caller,
/// who hands back the `next_cursor` of one answer to get the next page.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Cursor {
    time_ms: u64,
    skip: usize,
    before: u64,
}

impl Cursor {
    fn parse(s: &str) -> Result<Cursor, Refusal> {
        let mut parts = s.split('.');
        let mut next = || parts.next().and_then(|p| p.parse::<u64>().ok());
        match (next(), next(), next(), next()) {
            (Some(time_ms), Some(skip), Some(before), None) => {
                Ok(Cursor { time_ms, skip: usize::try_from(skip).unwrap_or(usize::MAX), before })
            }
            _ => Err(refuse(Code::RequestInvalid, "cursor must be a next_cursor value from an earlier page")),
        }
    }
}

impl std::fmt::Display for Cursor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}.{}.{}", self.time_ms, self.skip, self.before)
    }
}

/// A record the index found: already read (a shared index keeps the records) or located in
/// the local trail.
enum Found {
    Record(Box<StoredRecord>),
    At(crate::audit::index::Location),
}

/// One page of an audit query's answer.
#[derive(Debug)]
struct Page {
    records: Vec<(Option<String>, StoredRecord)>,
    /// Where the next page starts; `None` when this page is the last.
    next: Option<Cursor>,
}

/// A record as the control plane shows it: its JSON, with the replica that wrote it when
/// several share the store.
fn record_json(replica: Option<String>, r: &StoredRecord) -> serde_json::Value {
    let mut v = serde_json::to_value(r).unwrap_or_default();
    if let (Some(name), Some(o)) = (replica, v.as_object_mut()) {
        o.insert("replica".into(), name.into());
    }
    v
}

impl ControlPlane {
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        cfg: &ControlConfig,
        changes: Arc<Changes>,
        reloader: Arc<crate::reload::Reloader>,
        audit: Arc<AuditTrail>,
        index: Arc<dyn AuditIndex>,
        consent: Arc<Registry>,
        store: Arc<dyn crate::store::Store>,
        ops: Arc<crate::ops::Ops>,
    ) -> anyhow::Result<Self> {
        use anyhow::Context as _;
        // Config validation has checked every entry parses.
        let auditors = cfg.auditors.iter().filter_map(|a| Kbo::parse(a).ok()).collect();
        let policy = changes.handle.clone();
        let issuer = match &cfg.issuer {
            Some(i) => {
                let read = |p: &std::path::Path| {
                    std::fs::read_to_string(p).with_context(|| format!("control.issuer: cannot read {}", p.display()))
                };
                let signer = certs::CsrSigner::from_pem(&read(&i.cert)?, &read(&i.key)?)
                    .context("control.issuer: not a CA certificate and its key")?;
                Some((signer, i.days))
            }
            None => None,
        };
        Ok(ControlPlane {
            issuer,
            changes,
            reloader,
            policy,
            audit,
            index,
            auditors,
            consent,
            store,
            ops,
            ids: crate::pipeline::envelope::RequestIds::new(),
        })
    }

    /// Answers a request from the control listener.
    pub async fn handle(&self, req: Request<hyper::body::Incoming>, caller: &Caller) -> Response<Body> {
        self.call(req.map(BodyExt::boxed), caller).await
    }

    /// Answers a control-plane request for `caller`: the one path every operation takes,
    /// through the role table, whether it came from the API or from a console page.
    pub async fn call(&self, req: Request<ReqBody>, caller: &Caller) -> Response<Body> {
        // The caller's request id, echoed on every answer (one is made when it sent none).
        let (rid, malformed) = match self.ids.take(req.headers()) {
            Ok(rid) => (rid, None),
            Err((rid, refusal)) => (rid, Some(refusal)),
        };
        let found = match malformed {
            Some(refusal) => Err(refusal),
            None => routes::find(req.method().as_str(), req.uri().path()),
        };
        let result = match found {
            Err(refusal) => Err(refusal),
            Ok(m) => {
                let param = m.params.first().cloned().unwrap_or_default();
                let second = m.params.get(1).cloned().unwrap_or_default();
                match (m.method, m.template) {
                    ("GET", "/openapi.json") => Ok(openapi()),
                    ("POST", "/audit/queries") => self.audit_query(req, caller).await,
                    ("GET", "/audit/report") => self.subject_report(req, caller).await,
                    ("GET", "/audit/requesters") => self.list_requesters(caller).await,
                    ("POST", "/audit/requesters") => self.add_requester(req, caller).await,
                    ("POST", "/audit/requesters/{id}/end") => self.end_requester(&param, caller).await,
                    ("GET", "/audit/requests") => self.list_inquiries(caller).await,
                    ("POST", "/audit/requests") => self.file_inquiry(req, caller).await,
                    ("GET", "/audit/requests/{id}") => self.get_inquiry(&param, caller).await,
                    ("POST", "/audit/requests/{id}/advice") => self.advise_inquiry(&param, req, caller).await,
                    ("GET", "/audit/requests/{id}/results") => self.inquiry_results(&param, &req, caller).await,
                    ("POST", "/consents") => self.give_consent(req, caller).await,
                    ("GET", "/consents") => self.list_consents(&req, caller).await,
                    ("POST", "/consents/{id}/revoke") => self.change_consent(&param, true, caller).await,
                    ("POST", "/consents/{id}/revalidate") => self.change_consent(&param, false, caller).await,
                    ("GET", "/consents/due") => self.consents_due(&req, caller).await,
                    ("POST", "/consents/{id}/invite") => self.invite_consent(&param, caller).await,
                    ("GET", "/organisations") => self.list("organisations", &req, caller).await,
                    ("POST", "/organisations") => self.add_organisation(req, caller).await,
                    ("POST", "/organisations/{kbo}/certificates") => self.sign_request(&param, req, caller).await,
                    ("GET", "/sources") => self.list("sources", &req, caller).await,
                    ("POST", "/sources") => self.add_source(req, caller).await,
                    ("GET", "/services") => self.list("services", &req, caller).await,
                    ("POST", "/services") => self.add_service(req, caller).await,
                    ("GET", "/instruments") => self.list("instruments", &req, caller).await,
                    ("POST", "/instruments") => self.add_instrument(req, caller).await,
                    ("GET", "/instruments/{reference}") => self.get_instrument(&param, caller).await,
                    ("POST", "/instruments/{reference}/transitions") => self.transition(&param, req, caller).await,
                    ("POST", "/instruments/{reference}/advice") => self.instrument_advice(&param, req, caller).await,
                    ("POST", "/instruments/{reference}/adhesions") => self.adhere(&param, req, caller).await,
                    ("POST", "/instruments/{reference}/adhesions/{org}/transitions") => {
                        self.adhesion_step(&param, &second, req, caller).await
                    }
                    ("GET", "/roles") => self.list("roles", &req, caller).await,
                    ("POST", "/roles") => self.put_role(req, caller).await,
                    ("POST", "/roles/withdraw") => self.withdraw_role(req, caller).await,
                    ("GET", "/exceptional-accesses") => self.list("exceptional-accesses", &req, caller).await,
                    ("POST", "/exceptional-accesses") => self.add_exceptional(req, caller).await,
                    ("POST", "/exceptional-accesses/{id}/advice") => self.advise(&param, req, caller).await,
                    ("POST", "/exceptional-accesses/{id}/remark") => self.remark(&param, req, caller).await,
                    ("POST", "/exceptional-accesses/{id}/withdraw") => self.withdraw(&param, req, caller).await,
                    ("GET", "/dam-sheets") => self.list_dam(caller).await,
                    ("POST", "/dam-sheets") => self.add_dam(req, caller).await,
                    ("POST", "/dam-sheets/{id}/ict-advice") => self.dam_advice(&param, true, req, caller).await,
                    ("POST", "/dam-sheets/{id}/advice") => self.dam_advice(&param, false, req, caller).await,
                    ("POST", "/dam-sheets/{id}/remark") => self.dam_remark(&param, req, caller).await,
                    ("POST", "/dam-sheets/{id}/withdraw") => self.dam_withdraw(&param, req, caller).await,
                    ("GET", "/changes") => self.history(&req, caller).await,
                    ("GET", "/policy/export") => self.export(caller).await,
                    ("POST", "/policy/import") => self.import(req, caller).await,
                    ("POST", "/reload") => self.reload(caller).await,
                    ("GET", "/activity") => self.activity(caller).await,
                    _ => Err(refuse(Code::Internal, "a route without a handler")),
                }
            }
        };
        let mut resp = match result {
            Ok(r) => r,
            Err(refusal) => error::respond(&refusal, Dialect::Json, rid.to_str().unwrap_or_default()),
        };
        resp.headers_mut().insert(crate::pipeline::envelope::REQUEST_ID, rid);
        resp
    }

    /// The data plane's last hour, and whether the gateway and each source are ready now.
    async fn activity(&self, caller: &Caller) -> Result<Response<Body>, Refusal> {
        self.allowed(caller, "GET", "/activity", &authority::Scope::default())?;
        let mut doc = self.ops.activity.last_hour();
        doc["readiness"] = self.ops.readiness().await.1;
        Ok(json(StatusCode::OK, &doc))
    }

    /// Records a query of the trail, or a step of the a-posteriori control (`request_id` the
    /// inquiry's or the requester's id), durably before it is answered; its sequence number.
    async fn record_step(
        &self,
        caller: &Caller,
        request_id: &str,
        operation: &str,
        subjects: Vec<SubjectRef>,
        justification: String,
    ) -> Result<u64, Refusal> {
        let org = caller.org()?;
        let mut d = [0u8; 10];
        let mut record = Record::control(
            RecordKind::AuditQuery,
            now_ms(),
            request_id.to_owned(),
            Some(org.kbo.digits(&mut d).to_owned()),
            Some(org.fingerprint_hex()),
            operation,
        );
        record.subjects = subjects;
        record.justification = Some(justification);
        self.audit
            .append(&record)
            .await
            .map_err(|_| refuse(Code::AuditUnavailable, "this could not be recorded, so nothing was done or returned"))
    }

    /// Waits until the index has caught up with this gateway's trail, then reads one page of
    /// the records `selector` matches between `from` and `to`, in time order: from the local
    /// trail (embedded store), or from the shared index, which holds the records of every
    /// replica (each named by its chain). `before` leaves out this gateway's own records from
    /// that sequence number on (a query's own record, what came after an approval), or from
    /// the cursor's bound when that is lower. The page starts at `cursor` (the previous page's
    /// [`Page::next`]) and holds at most `limit` records.
    async fn find_page(
        &self,
        selector: Selector,
        (from, to): (u64, u64),
        cursor: Option<Cursor>,
        limit: usize,
        before: u64,
    ) -> Result<Page, Refusal> {
        let (audit, index) = (self.audit.clone(), self.index.clone());
        let index_failed = |e: crate::store::StoreError| {
            tracing::error!(error = %e, "audit index query failed");
            if e.is_unavailable() {
                refuse(Code::StoreUnavailable, "the audit index cannot be reached")
            } else {
                refuse(Code::Internal, "query failed")
            }
        };
        let unreadable = |e: String| {
            tracing::error!(error = %e, "audit record unreadable");
            refuse(Code::Internal, "a record could not be read; run passerelle audit verify")
        };
        // The page starts at the cursor's millisecond, past the records of that millisecond
        // that earlier pages delivered (the index's order is total: time, then chain and seq).
        let (start, skip) = match cursor {
            Some(c) if c.time_ms >= from => (c.time_ms, c.skip),
            _ => (from, 0),
        };
        let before = cursor.map_or(before, |c| c.before.min(before));
        let limit = limit.max(1);
        let want = skip + limit + 1;
        tokio::task::spawn_blocking(move || {
            if !audit.wait_indexed_to(index.as_ref(), before.saturating_sub(1), Duration::from_secs(5)) {
                tracing::warn!("audit index lags behind the trail; the query may miss the newest records");
            }
            let own = index.replica().map(str::to_owned);
            // Ask for more until `want` records survive the `before` filter or the index runs dry.
            let mut ask = want;
            let mut found: Vec<(Option<String>, Found)> = loop {
                let (rows, n): (Vec<_>, usize) =
                    if let Some(shared) = index.audit_shared(&selector, start, to, ask).map_err(index_failed)? {
                        let n = shared.len();
                        let kept = shared
                            .into_iter()
                            .filter(|r| own.as_deref() != Some(r.replica.as_str()) || r.record.seq < before)
                            .map(|r| (Some(r.replica), Found::Record(Box::new(r.record))))
                            .collect();
                        (kept, n)
                    } else {
                        let locations = index.audit_query(&selector, start, to, ask).map_err(index_failed)?;
                        let n = locations.len();
                        (locations.into_iter().filter(|l| l.seq < before).map(|l| (None, Found::At(l))).collect(), n)
                    };
                if rows.len() >= want || n < ask {
                    break rows;
                }
                ask = ask.saturating_mul(2);
            };
            let more = found.len() > skip + limit;
            found.truncate(skip + limit);
            let records = found
                .drain(skip.min(found.len())..)
                .map(|(replica, f)| match f {
                    Found::Record(r) => Ok((replica, *r)),
                    Found::At(l) => read_record(&audit.dir, l).map(|r| (replica, r)).map_err(unreadable),
                })
                .collect::<Result<Vec<_>, Refusal>>()?;
            let next = records.last().filter(|_| more).map(|(_, last)| {
                let t = last.record.time_ms;
                let same = records.iter().rev().take_while(|(_, r)| r.record.time_ms == t).count();
                Cursor { time_ms: t, skip: same + if t == start { skip } else { 0 }, before }
            });
            Ok(Page { records, next })
        })
        .await
        .map_err(|_| refuse(Code::Internal, "query failed"))?
    }

    async fn audit_query(&self, req: Request<ReqBody>, caller: &Caller) -> Result<Response<Body>, Refusal> {
        caller.org()?;
        self.allowed(caller, "POST", "/audit/queries", &authority::Scope::default())?;
        let q: Query = read_json(req).await?;
        let j = Justification::required(q.justification)?;
        let from = q.from.as_deref().map(|s| time_ms(s, "from")).transpose()?.unwrap_or(0);
        let to = q.to.as_deref().map(|s| time_ms(s, "to")).transpose()?.unwrap_or(u64::MAX);
        let limit = page_limit(q.limit)?;
        let cursor = q.cursor.as_deref().map(Cursor::parse).transpose()?;
        let (selector, subjects) = selector(q.subject.as_deref(), q.caller.as_deref())?;
        let justification = format!(
            "case {}; legal ground: {}{}; requested by: {}",
            j.case_reference,
            j.legal_ground,
            j.legal_reference.as_deref().map(|r| format!("; legal reference: {r}")).unwrap_or_default(),
            j.requested_by
        );
        let rid = format!("audit-query-{}", now_ms());
        let query_seq = self.record_step(caller, &rid, "POST /audit/queries", subjects, justification).await?;
        // The trail as it stood when the query was made: not the query's own record.
        let page = self.find_page(selector, (from, to), cursor, limit, query_seq).await?;
        let records: Vec<serde_json::Value> = page.records.into_iter().map(|(rep, r)| record_json(rep, &r)).collect();
        Ok(json(
            StatusCode::OK,
            &serde_json::json!({
                "query_record": query_seq, "count": records.len(), "truncated": page.next.is_some(),
                "next_cursor": page.next.map(|c| c.to_string()), "records": records,
            }),
        ))
    }

    async fn subject_report(&self, req: Request<ReqBody>, caller: &Caller) -> Result<Response<Body>, Refusal> {
        let org = caller.org()?;
        // A citizen access point asks for the citizen it authenticated; an enterprise or an
        // association asks about itself, with its own certificate.
        let snapshot = self.policy.current();
        let portal = snapshot.organisation(org.kbo).is_some_and(|o| o.kind == OrgKind::CitizenAccessPoint);
        let (person, why) = if portal {
            self.allowed(caller, "GET", "/audit/report", &authority::Scope::default())?;
            (SubjectRef::Person(citizen(&req)?), "the data subject's own request, through a citizen access point")
        } else {
            let named = req.headers().get("x-subject").and_then(|v| v.to_str().ok()).ok_or_else(|| {
                refuse(
                    Code::SubjectInvalid,
                    "header x-subject (your enterprise number or your registered vCode) is required",
                )
            })?;
            let subject = subject_ref(named)?;
            let model = self.policy.model();
            let own_vcode = model.organisations.iter().find(|o| o.kbo == org.kbo).and_then(|o| o.vcode.as_deref());
            let mut d = [0u8; 10];
            let itself = match &subject {
                SubjectRef::Organisation(k) => *k == org.kbo.digits(&mut d),
                SubjectRef::Association(v) => own_vcode == Some(v.as_str()),
                SubjectRef::Person(_) => false,
            };
            let scope = authority::Scope { org: itself.then_some(org.kbo), ..authority::Scope::default() };
            self.allowed(caller, "GET", "/audit/report", &scope)?;
            (subject, "the data subject's own request, with its own certificate")
        };
        let own = self
            .record_step(
                caller,
                &format!("audit-query-{}", now_ms()),
                "GET /audit/report",
                vec![person.clone()],
                why.to_owned(),
            )
            .await?;
        // In time order, whichever replica wrote each record; a page at a time; the trail as
        // it stood when the report was asked (not its own record).
        let cursor = routes::query_param(req.uri().query(), "cursor").map(|c| Cursor::parse(&c)).transpose()?;
        let page =
            self.find_page(Selector::Subject(person.index_key()), (0, u64::MAX), cursor, MAX_RESULTS, own).await?;
        let records: Vec<StoredRecord> = page.records.into_iter().map(|(_, r)| r).collect();
        let accesses: Vec<serde_json::Value> = records
            .iter()
            .filter(|r| r.record.kind == RecordKind::DataCall)
            .map(|r| {
                let org = r.record.caller.as_deref().and_then(|c| Kbo::parse(c).ok());
                let name = org.and_then(|k| snapshot.organisation(k)).map(|o| o.name.to_string());
                let when = rfc3339(r.record.time_ms);
                serde_json::json!({
                    "time": when,
                    "organisation": { "enterprise_number": r.record.caller, "name": name },
                    "service": r.record.service,
                    "purpose": r.record.purpose,
                    "legal_basis": r.record.legal_basis,
                    "outcome": r.record.outcome,
                    "refusal_code": r.record.code,
                })
            })
            .collect();
        Ok(json(
            StatusCode::OK,
            &serde_json::json!({
                "subject": person, "count": accesses.len(), "accesses": accesses,
                "next_cursor": page.next.map(|c| c.to_string()),
            }),
        ))
    }
}

/// The first line of an error chain (file paths and keys, never data).
fn first_line(s: &str) -> &str {
    s.lines().next().unwrap_or(s)
}

fn openapi() -> Response<Body> {
    let mut r = Response::new(Full::new(Bytes::from_static(OPENAPI.as_bytes())));
    r.headers_mut().insert(header::CONTENT_TYPE, http::HeaderValue::from_static("application/json"));
    r
}

/// Reads a JSON body of at most 16 KiB.
pub(crate) async fn read_json<T: serde::de::DeserializeOwned>(req: Request<ReqBody>) -> Result<T, Refusal> {
    let body = Limited::new(req.into_body(), MAX_BODY)
        .collect()
        .await
        .map_err(|_| refuse(Code::RequestInvalid, "the body is unreadable or larger than 16 KiB"))?
        .to_bytes();
    let shape = |e: serde_json::Error| {
        refuse(Code::RequestInvalid, format!("the body is not valid JSON of the documented shape: {e}"))
    };
    let Strict(value) = serde_json::from_slice(&body).map_err(shape)?;
    serde_json::from_value(value).map_err(shape)
}

/// A JSON document read strictly and with JSON's own notion of numbers: a key given twice in
/// one object is refused (a plain `serde_json::Value` would keep the last), and a number with no
/// fractional part becomes an integer — JSON has one kind of number, and JSON Schema counts
/// `444.0` as an integer, as the OpenAPI document's `integer` fields do.
struct Strict(serde_json::Value);

impl<'de> Deserialize<'de> for Strict {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(StrictVisitor).map(Strict)
    }
}

struct StrictVisitor;

impl<'de> serde::de::Visitor<'de> for StrictVisitor {
    type Value = serde_json::Value;

    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("a JSON value")
    }
    fn visit_bool<E>(self, v: bool) -> Result<Self::Value, E> {
        Ok(v.into())
    }
    fn visit_i64<E>(self, v: i64) -> Result<Self::Value, E> {
        Ok(v.into())
    }
    fn visit_u64<E>(self, v: u64) -> Result<Self::Value, E> {
        Ok(v.into())
    }
    fn visit_f64<E>(self, v: f64) -> Result<Self::Value, E> {
        // Integral and exactly representable: an integer.
        if v.fract() == 0.0 && v.abs() < 9_007_199_254_740_992.0 {
            return Ok((v as i64).into());
        }
        Ok(serde_json::Number::from_f64(v).map_or(serde_json::Value::Null, serde_json::Value::Number))
    }
    fn visit_str<E>(self, v: &str) -> Result<Self::Value, E> {
        Ok(v.into())
    }
    fn visit_string<E>(self, v: String) -> Result<Self::Value, E> {
        Ok(v.into())
    }
    fn visit_unit<E>(self) -> Result<Self::Value, E> {
        Ok(serde_json::Value::Null)
    }
    fn visit_seq<A: serde::de::SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
        let mut out = Vec::new();
        while let Some(Strict(v)) = seq.next_element()? {
            out.push(v);
        }
        Ok(out.into())
    }
    fn visit_map<A: serde::de::MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        let mut out = serde_json::Map::new();
        while let Some(key) = map.next_key::<String>()? {
            if out.contains_key(&key) {
                return Err(serde::de::Error::custom(format!("duplicate field `{key}`")));
            }
            let Strict(v) = map.next_value()?;
            out.insert(key, v);
        }
        Ok(out.into())
    }
}

fn change_refusal(e: ChangeError) -> Refusal {
    match e {
        ChangeError::NotFound => refuse(Code::ServiceUnknown, "no consent with this id"),
        ChangeError::AlreadyRevoked => refuse(Code::RequestInvalid, "the consent is already revoked"),
        ChangeError::Invalid(m) => refuse(Code::RequestInvalid, m),
        ChangeError::Store(e) if e.is_unavailable() => {
            tracing::error!(error = %e, "consent store unavailable");
            refuse(Code::StoreUnavailable, "the store cannot be reached; nothing was changed")
        }
        ChangeError::Store(e) => {
            tracing::error!(error = %e, "consent store write failed");
            refuse(Code::Internal, "the consent could not be stored; nothing was changed")
        }
    }
}

impl ControlPlane {
    /// Who may manage consents, and through which channel: a citizen access point for the
    /// citizen, or the integrator's administrators on behalf of an instance.
    fn consent_actor(&self, caller: &Caller, method: &str, path: &str) -> Result<(Kbo, bool), Refusal> {
        let who = self.allowed(caller, method, path, &authority::Scope::default())?;
        Ok((who.kbo, who.kind == Some(OrgKind::CitizenAccessPoint)))
    }

    async fn give_consent(&self, req: Request<ReqBody>, caller: &Caller) -> Result<Response<Body>, Refusal> {
        let (actor, is_portal) = self.consent_actor(caller, "POST", "/consents")?;
        let asked: NewConsent = read_json(req).await?;
        // The gateway's clock, as for every decision (tests move it forward).
        let consent =
            asked.validate(&self.policy.current(), actor, is_portal, self.policy.now_ms()).map_err(|e| match e {
                Invalid::Subject(m) => refuse(Code::SubjectInvalid, m),
                Invalid::Request(m) => refuse(Code::RequestInvalid, m),
            })?;
        let registry = self.consent.clone();
        let c = consent.clone();
        let mut ad = [0u8; 10];
        let actor_s = actor.digits(&mut ad).to_owned();
        tokio::task::spawn_blocking(move || registry.give(&c, &actor_s))
            .await
            .map_err(|_| refuse(Code::Internal, "consent not stored"))?
            .map_err(change_refusal)?;
        Ok(json(StatusCode::CREATED, &serde_json::json!(consent)))
    }

    async fn change_consent(&self, id: &str, revoke: bool, caller: &Caller) -> Result<Response<Body>, Refusal> {
        let path = if revoke { "/consents/{id}/revoke" } else { "/consents/{id}/revalidate" };
        let (actor, _) = self.consent_actor(caller, "POST", path)?;
        if crate::consent::ConsentId::parse(id).is_none() {
            return Err(refuse(Code::RequestInvalid, "a consent id is c- followed by 32 hex digits"));
        }
        let (registry, id) = (self.consent.clone(), id.to_owned());
        let mut ad = [0u8; 10];
        let actor = actor.digits(&mut ad).to_owned();
        let now = self.policy.now_ms();
        let c = tokio::task::spawn_blocking(move || {
            if revoke { registry.revoke(&id, now, &actor) } else { registry.revalidate(&id, now, &actor) }
        })
        .await
        .map_err(|_| refuse(Code::Internal, "consent not changed"))?
        .map_err(change_refusal)?;
        Ok(json(StatusCode::OK, &serde_json::json!(c)))
    }

    async fn list_consents(&self, req: &Request<ReqBody>, caller: &Caller) -> Result<Response<Body>, Refusal> {
        self.consent_actor(caller, "GET", "/consents")?;
        let subject = citizen(req)?;
        let snapshot = self.policy.current();
        let now = self.policy.now_ms();
        let list = self
            .read_consents("listing failed", move |registry| {
                let store = registry.store();
                registry
                    .of_subject(&subject)?
                    .into_iter()
                    .map(|c| {
                        let history = store.history(&c.id)?;
                        let revalidation = revalidation(&snapshot, &c, now);
                        Ok(serde_json::json!({ "consent": c, "history": history, "revalidation": revalidation }))
                    })
                    .collect::<Result<Vec<_>, crate::store::StoreError>>()
            })
            .await?;
        Ok(json(StatusCode::OK, &serde_json::json!({ "count": list.len(), "consents": list })))
    }
}

impl ControlPlane {
    /// Reads the consent store off the async threads; a failure is logged for the operator
    /// and answered as `INTERNAL`, naming `what` failed.
    async fn read_consents<T, F>(&self, what: &'static str, f: F) -> Result<T, Refusal>
    where
        T: Send + 'static,
        F: FnOnce(&crate::consent::Registry) -> Result<T, crate::store::StoreError> + Send + 'static,
    {
        let registry = self.consent.clone();
        tokio::task::spawn_blocking(move || f(&registry)).await.map_err(|_| refuse(Code::Internal, what))?.map_err(
            |e| {
                tracing::error!(error = %e, "consent store read failed");
                refuse(Code::Internal, what)
            },
        )
    }
}

/// When a consent's re-validation falls due under its source's rule, and whether it is due at
/// `now` (Unix ms); null when the source sets none.
fn revalidation(snapshot: &policies::Snapshot, c: &crate::consent::Consent, now: u64) -> serde_json::Value {
    const DAY: u64 = 86_400_000;
    let Some(r) = snapshot.service(&c.service).and_then(|(_, s)| s.revalidation) else {
        return serde_json::Value::Null;
    };
    let due_ms = (c.last_validated_ms / DAY + u64::from(r.days)) * DAY;
    serde_json::json!({
        "rule": r.rule,
        "every_days": r.days,
        "due_on": rfc3339(due_ms),
        "due": c.revoked_at_ms.is_none() && now >= due_ms,
    })
}

impl ControlPlane {
    /// The consents of one source whose re-validation is due (`GET /consents/due?source=`),
    /// for its data owner to invite the citizens. The list names persons: it is recorded in
    /// the trail, with the subjects it names, before it is answered.
    async fn consents_due(&self, req: &Request<ReqBody>, caller: &Caller) -> Result<Response<Body>, Refusal> {
        let q = req.uri().query();
        for kv in q.unwrap_or_default().split('&').filter(|kv| !kv.is_empty()) {
            let k = kv.split_once('=').map_or(kv, |(k, _)| k);
            if !matches!(k, "source" | "limit") {
                return Err(refuse(Code::RequestInvalid, format!("unknown parameter {k:?}; give source and limit")));
            }
        }
        let source = routes::query_param(q, "source")
            .ok_or_else(|| refuse(Code::RequestInvalid, "source (the source's id) is required"))?
            .into_owned();
        let limit = routes::query_param(q, "limit")
            .map(|v| v.parse::<u64>().map_err(|_| refuse(Code::RequestInvalid, "limit must be a number")))
            .transpose()?;
        let limit = page_limit(limit)?;
        let model = self.policy.model();
        if !model.sources.iter().any(|s| s.id == source) {
            return Err(refuse(Code::ResourceUnknown, format!("no source '{source}'")));
        }
        self.allowed(caller, "GET", "/consents/due", &authority::Scope::sources([source.clone()]))?;
        let Some(rule) = model.sources.iter().find(|s| s.id == source).and_then(|s| s.revalidation) else {
            return Err(refuse(Code::RequestInvalid, format!("source '{source}' sets no re-validation of consents")));
        };
        let snapshot = self.policy.current();
        let services: Vec<(String, u32)> = model
            .services
            .iter()
            .filter(|s| s.source == source)
            .filter_map(|s| snapshot.service(&s.id).and_then(|(_, s)| s.revalidation).map(|r| (s.id.clone(), r.days)))
            .collect();
        let now = self.policy.now_ms();
        let (due, total) = self
            .read_consents("listing failed", move |registry| {
                let store = registry.store();
                let periods: Vec<(&str, u32)> = services.iter().map(|(s, d)| (s.as_str(), *d)).collect();
                let (found, total) = registry.due(&periods, now, limit)?;
                // Read again from the store: shown only if still due as the store has it.
                let due: Vec<_> = found
                    .into_iter()
                    .map(|c| {
                        let r = revalidation(&snapshot, &c, now);
                        (c, r)
                    })
                    .filter(|(_, r)| r["due"] == true)
                    .collect();
                let mut out = Vec::with_capacity(due.len());
                for (c, r) in due {
                    let invited = store
                        .history(&c.id)?
                        .iter()
                        .rev()
                        .find(|e| e["event"] == "invited")
                        .and_then(|e| e["at_ms"].as_u64())
                        .and_then(rfc3339);
                    out.push((c, r, invited));
                }
                Ok((out, total))
            })
            .await?;
        let subjects: Vec<SubjectRef> = due.iter().map(|(c, _, _)| SubjectRef::Person(c.subject.clone())).collect();
        self.record_step(
            caller,
            &format!("consents-due-{}", now_ms()),
            "GET /consents/due",
            subjects,
            format!(
                "consents of source {source} due for re-validation ({} rule), to invite the citizens",
                rule.rule.as_str()
            ),
        )
        .await?;
        let items: Vec<serde_json::Value> = due
            .into_iter()
            .map(|(c, r, invited)| {
                serde_json::json!({
                    "id": c.id, "subject": c.subject, "service": c.service, "recipient": c.recipient,
                    "last_validated": rfc3339(c.last_validated_ms), "due_on": r["due_on"], "invited_at": invited,
                })
            })
            .collect();
        Ok(json(
            StatusCode::OK,
            &serde_json::json!({
                "source": source, "rule": rule.rule, "every_days": rule.days,
                "count": items.len(), "total": total, "truncated": total > items.len(), "items": items,
            }),
        ))
    }

    /// Records that the citizen was invited to re-validate one consent
    /// (`POST /consents/{id}/invite`).
    async fn invite_consent(&self, id: &str, caller: &Caller) -> Result<Response<Body>, Refusal> {
        if crate::consent::ConsentId::parse(id).is_none() {
            return Err(refuse(Code::RequestInvalid, "a consent id is c- followed by 32 hex digits"));
        }
        let key = id.to_owned();
        let c = self
            .read_consents("reading the consent failed", move |registry| registry.store().get(&key))
            .await?
            .ok_or_else(|| refuse(Code::ResourceUnknown, "no such consent"))?;
        let model = self.policy.model();
        let source = model.services.iter().find(|s| s.id == c.service).map(|s| s.source.clone());
        let who = self.allowed(caller, "POST", "/consents/{id}/invite", &authority::Scope::sources(source))?;
        let (registry, id) = (self.consent.clone(), id.to_owned());
        let mut ad = [0u8; 10];
        let actor = who.kbo.digits(&mut ad).to_owned();
        let now = self.policy.now_ms();
        let c = tokio::task::spawn_blocking(move || registry.invite(&id, now, &actor))
            .await
            .map_err(|_| refuse(Code::Internal, "consent not changed"))?
            .map_err(change_refusal)?;
        let r = revalidation(&self.policy.current(), &c, now);
        Ok(json(StatusCode::OK, &serde_json::json!({ "consent": c, "revalidation": r, "invited_at": rfc3339(now) })))
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::Strict;

    #[test]
    fn json_bodies_are_read_strictly_with_integral_numbers() {
        let Strict(v) = serde_json::from_str(r#"{"a":444.0,"b":1.5,"c":[2.0,{"d":-3.0}],"e":null}"#).unwrap();
        assert_eq!(v, serde_json::json!({"a":444,"b":1.5,"c":[2,{"d":-3}],"e":null}));
        assert!(v["a"].is_i64() && v["b"].is_f64());
        let dup = serde_json::from_str::<Strict>(r#"{"kbo":"1","x":{"y":1,"y":2}}"#).err().unwrap();
        assert!(dup.to_string().contains("duplicate field `y`"), "{dup}");
    }
}
