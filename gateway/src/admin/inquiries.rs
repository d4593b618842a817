//! The a-posteriori control of individual accesses, as seed 004 §6 runs it.
//!
//! The persons the seed designates (the public prosecutor, an investigating judge, the police
//! with an apostille, the ICT services, the service desk, an authority competent for a
//! disciplinary proposal) are registered, by organisation and role, as **requesters** for one
//! data owner's trail (`POST /audit/requesters`), by the integrator, that data owner or its
//! privacy office. A requester files an **inquiry** (`POST /audit/requests`): the justification
//! of its form (case reference, legal ground, legal reference such as the apostille number,
//! who asks), what it is about (a subject, or a calling organisation) and the time range. It
//! runs only on the favourable **advice** of the privacy office of the data owner's sources
//! (`POST /audit/requests/{id}/advice`), never given by the requester itself; the advice fixes
//! what the inquiry reads (this gateway's trail as it stood at that moment, nothing after).
//! The requester, or the privacy office that passes the result on, then **reads the result**
//! page by page (`GET /audit/requests/{id}/results`). It holds the records about the data
//! owner's sources only.
//!
//! Every step is an `audit-query` record whose `request_id` is the inquiry's id, durable before
//! the step is answered. Requesters and inquiries are kept in the store (shared by the replicas
//! of a PostgreSQL store), not in the policy: an inquiry names a person, and the policy is
//! exported and published.

use std::sync::atomic::{AtomicU64, Ordering};

use http::{Request, Response, StatusCode};
use policies::ids::Kbo;
use policies::model::Date;
use serde::{Deserialize, Serialize};

use super::authority::{Scope, Who};
use super::flows::today;
use super::{
    ControlPlane, Cursor, Justification, json, page_limit, read_json, record_json, refuse, rfc3339, routes, selector,
    time_ms,
};
use crate::audit::SubjectRef;
use crate::audit::index::Selector;
use crate::error::{Body, Code, Refusal};
use crate::pipeline::identity::Caller;
use crate::store::{Store, StoreError};

const REQUESTERS: &str = "audit-requester/";
const INQUIRIES: &str = "audit-request/";

/// The persons seed 004 §6 designates to ask for the a-posteriori control.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum RequesterRole {
    /// The public prosecutor (procureur du Roi).
    Prosecutor,
    /// An investigating judge (juge d'instruction).
    InvestigatingJudge,
    /// The police, with an apostille of the prosecutor: the inquiry must give its number.
    Police,
    /// The ICT services.
    Ict,
    /// The service desk.
    ServiceDesk,
    /// An authority competent to propose a disciplinary sanction (AM of 17 December 2012).
    DisciplinaryAuthority,
}

/// An organisation designated to ask for the control of one data owner's trail.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Requester {
    /// `<owner>-<organisation>`.
    pub id: String,
    /// Enterprise number of the designated organisation.
    pub organisation: String,
    pub role: RequesterRole,
    /// Enterprise number of the data owner whose sources' records it may ask about.
    pub owner: String,
    /// The office, as the designation names it (never a person's name).
    pub designation: String,
    /// The last day the designation holds.
    pub valid_until: Date,
    pub registered_by: String,
    pub registered_at_ms: u64,
    pub ended_at_ms: Option<u64>,
    pub ended_by: Option<String>,
}

impl Requester {
    fn holds_at(&self, now_ms: u64) -> bool {
        self.ended_at_ms.is_none() && today(now_ms).is_some_and(|d| d <= self.valid_until)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum State {
    /// Awaiting the privacy office's advice.
    Submitted,
    /// Favourable advice: the result can be read.
    Approved,
    /// Unfavourable advice: nothing runs.
    Rejected,
}

/// The privacy office's advice.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Advice {
    pub favourable: bool,
    pub reason: String,
    pub by: String,
    pub at_ms: u64,
    /// The sequence number of the advice's audit record; an approved inquiry reads this
    /// gateway's records before it.
    pub record: u64,
}

/// A request for the a-posteriori control.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Inquiry {
    pub id: String,
    /// Enterprise number of the requester.
    pub requester: String,
    pub role: RequesterRole,
    /// Enterprise number of the data owner whose sources' records are asked for.
    pub owner: String,
    pub subject: Option<SubjectRef>,
    /// Enterprise number of a calling organisation whose calls are asked for.
    pub caller: Option<String>,
    pub from_ms: u64,
    /// The end of the range asked; an approval cuts it at the moment of the advice.
    pub to_ms: u64,
    pub justification: Justification,
    pub submitted_at_ms: u64,
    pub state: State,
    pub advice: Option<Advice>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct NewRequester {
    organisation: String,
    role: RequesterRole,
    owner: String,
    designation: String,
    valid_until: Date,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct NewInquiry {
    owner: String,
    subject: Option<String>,
    caller: Option<String>,
    from: Option<String>,
    to: Option<String>,
    justification: Option<Justification>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct NewAdvice {
    favourable: bool,
    reason: String,
}

fn digits(k: Kbo) -> String {
    let mut d = [0u8; 10];
    k.digits(&mut d).to_owned()
}

fn kbo(s: &str, what: &str) -> Result<Kbo, Refusal> {
    Kbo::parse(s).map_err(|e| refuse(Code::RequestInvalid, format!("{what}: {e}")))
}

fn store_failed(e: StoreError) -> Refusal {
    tracing::error!(error = %e, "store failed (a-posteriori control)");
    if e.is_unavailable() {
        refuse(Code::StoreUnavailable, "the store cannot be reached; nothing was changed")
    } else {
        refuse(Code::Internal, "the store failed; nothing was changed")
    }
}

/// Runs a blocking store call off the async threads.
async fn blocking<T: Send + 'static>(
    store: &std::sync::Arc<dyn Store>,
    f: impl FnOnce(&dyn Store) -> Result<T, StoreError> + Send + 'static,
) -> Result<T, Refusal> {
    let store = store.clone();
    tokio::task::spawn_blocking(move || f(store.as_ref()))
        .await
        .map_err(|_| refuse(Code::Internal, "store call failed"))?
        .map_err(store_failed)
}

fn decode<T: serde::de::DeserializeOwned>(bytes: &[u8]) -> Result<T, Refusal> {
    serde_json::from_slice(bytes).map_err(|e| {
        tracing::error!(error = %e, "a stored requester or inquiry does not decode");
        refuse(Code::Internal, "a stored requester or inquiry is unreadable")
    })
}

fn requester_view(r: &Requester, now: u64) -> serde_json::Value {
    let mut v = serde_json::json!(r);
    if let Some(o) = v.as_object_mut() {
        o.insert("registered_at".into(), rfc3339(r.registered_at_ms).into());
        o.insert("in_force".into(), r.holds_at(now).into());
    }
    v
}

fn inquiry_view(q: &Inquiry) -> serde_json::Value {
    let mut v = serde_json::json!(q);
    if let Some(o) = v.as_object_mut() {
        o.insert("submitted_at".into(), rfc3339(q.submitted_at_ms).into());
        o.insert("from".into(), rfc3339(q.from_ms).into());
        o.insert("to".into(), rfc3339(q.to_ms).into());
    }
    v
}

/// Distinguishes inquiries filed in the same millisecond.
static NEXT: AtomicU64 = AtomicU64::new(0);

impl ControlPlane {
    /// The sources the data owner `owner` holds: the privacy office role is held on them.
    fn owner_scope(&self, owner: Kbo) -> Scope {
        let p = self.changes.handle.model();
        Scope::sources(p.sources.iter().filter(|s| s.owner == owner).map(|s| s.id.clone()))
    }

    async fn inquiry(&self, id: &str) -> Result<(Inquiry, Vec<u8>), Refusal> {
        let key = format!("{INQUIRIES}{id}");
        let raw = blocking(&self.store, move |s| s.meta_get(&key))
            .await?
            .ok_or_else(|| refuse(Code::ResourceUnknown, format!("no inquiry '{id}'")))?;
        Ok((decode(&raw)?, raw))
    }

    pub(super) async fn list_requesters(&self, caller: &Caller) -> Result<Response<Body>, Refusal> {
        let who = self.allowed(caller, "GET", "/audit/requesters", &Scope::default())?;
        let all: Vec<Requester> = blocking(&self.store, |s| s.meta_scan(REQUESTERS))
            .await?
            .iter()
            .map(|(_, v)| decode(v))
            .collect::<Result<_, _>>()?;
        let me = digits(who.kbo);
        let p = self.changes.handle.model();
        let now = self.changes.handle.now_ms();
        let items: Vec<serde_json::Value> = all
            .iter()
            .filter(|r| {
                who.sees_all()
                    || r.organisation == me
                    || p.sources
                        .iter()
                        .any(|s| digits(s.owner) == r.owner && (s.owner == who.kbo || s.privacy_office() == who.kbo))
            })
            .map(|r| requester_view(r, now))
            .collect();
        Ok(json(StatusCode::OK, &serde_json::json!({ "count": items.len(), "items": items })))
    }

    pub(super) async fn add_requester(
        &self,
        req: Request<super::ReqBody>,
        caller: &Caller,
    ) -> Result<Response<Body>, Refusal> {
        let who = self.who(caller)?;
        let r: NewRequester = read_json(req).await?;
        let (org, owner) = (kbo(&r.organisation, "organisation")?, kbo(&r.owner, "owner")?);
        let scope = self.owner_scope(owner);
        if scope.sources.is_empty() {
            return Err(refuse(Code::ResourceUnknown, format!("organisation {owner} owns no source")));
        }
        who.require("POST", "/audit/requesters", &scope, &self.changes.handle.model())?;
        if self.policy.current().organisation(org).is_none() {
            return Err(refuse(Code::ResourceUnknown, format!("organisation {org} is not registered")));
        }
        if r.designation.trim().is_empty() {
            return Err(refuse(Code::RequestInvalid, "designation must name the designated office"));
        }
        let now = self.changes.handle.now_ms();
        if today(now).is_some_and(|t| r.valid_until < t) {
            return Err(refuse(Code::RequestInvalid, "valid_until is in the past"));
        }
        let requester = Requester {
            id: format!("{}-{}", digits(owner), digits(org)),
            organisation: digits(org),
            role: r.role,
            owner: digits(owner),
            designation: r.designation.trim().to_owned(),
            valid_until: r.valid_until,
            registered_by: digits(who.kbo),
            registered_at_ms: now,
            ended_at_ms: None,
            ended_by: None,
        };
        let bytes = serde_json::to_vec(&requester).map_err(|_| refuse(Code::Internal, "encoding failed"))?;
        let key = format!("{REQUESTERS}{}", requester.id);
        // A designation that ended (or lapsed) may be registered anew; one in force may not.
        let stored = blocking(&self.store, move |s| {
            if s.meta_create(&key, &bytes)? {
                return Ok(Ok(()));
            }
            let Some(old) = s.meta_get(&key)? else { return Ok(Err(None)) };
            Ok(Err(Some((old, key, bytes))))
        })
        .await?;
        if let Err(existing) = stored {
            let Some((old, key, bytes)) = existing else {
                return Err(refuse(Code::ConcurrentChange, "the designation changed meanwhile; retry"));
            };
            let previous: Requester = decode(&old)?;
            if previous.holds_at(now) {
                return Err(refuse(
                    Code::AlreadyExists,
                    format!("{org} is already designated for {owner}'s trail; end that designation first"),
                ));
            }
            if !blocking(&self.store, move |s| s.meta_swap(&key, &old, &bytes)).await? {
                return Err(refuse(Code::ConcurrentChange, "the designation changed meanwhile; retry"));
            }
        }
        self.record_step(
            caller,
            &requester.id,
            "POST /audit/requesters",
            vec![],
            format!(
                "designated {} as {} for the trail of {}: {}; until {}",
                requester.organisation,
                role_name(requester.role),
                requester.owner,
                requester.designation,
                requester.valid_until
            ),
        )
        .await?;
        Ok(json(StatusCode::CREATED, &requester_view(&requester, now)))
    }

    pub(super) async fn end_requester(&self, id: &str, caller: &Caller) -> Result<Response<Body>, Refusal> {
        let who = self.who(caller)?;
        let key = format!("{REQUESTERS}{id}");
        let k = key.clone();
        let old = blocking(&self.store, move |s| s.meta_get(&k))
            .await?
            .ok_or_else(|| refuse(Code::ResourceUnknown, format!("no requester '{id}'")))?;
        let mut r: Requester = decode(&old)?;
        let owner = kbo(&r.owner, "owner")?;
        who.require("POST", "/audit/requesters/{id}/end", &self.owner_scope(owner), &self.changes.handle.model())?;
        if r.ended_at_ms.is_some() {
            return Err(refuse(Code::TransitionNotAllowed, "the designation has already ended"));
        }
        let now = self.changes.handle.now_ms();
        r.ended_at_ms = Some(now);
        r.ended_by = Some(digits(who.kbo));
        let bytes = serde_json::to_vec(&r).map_err(|_| refuse(Code::Internal, "encoding failed"))?;
        if !blocking(&self.store, move |s| s.meta_swap(&key, &old, &bytes)).await? {
            return Err(refuse(Code::ConcurrentChange, "the designation changed meanwhile; retry"));
        }
        self.record_step(caller, &r.id, "POST /audit/requesters/{id}/end", vec![], "designation ended".to_owned())
            .await?;
        Ok(json(StatusCode::OK, &requester_view(&r, now)))
    }

    pub(super) async fn file_inquiry(
        &self,
        req: Request<super::ReqBody>,
        caller: &Caller,
    ) -> Result<Response<Body>, Refusal> {
        let who = self.who(caller)?;
        let q: NewInquiry = read_json(req).await?;
        let owner = kbo(&q.owner, "owner")?;
        // The caller must hold a designation in force for this owner's trail.
        let key = format!("{REQUESTERS}{}-{}", digits(owner), digits(who.kbo));
        let designation = blocking(&self.store, move |s| s.meta_get(&key)).await?;
        let now = self.changes.handle.now_ms();
        let requester = designation.map(|d| decode::<Requester>(&d)).transpose()?.filter(|r| r.holds_at(now));
        let scope = Scope { org: requester.as_ref().map(|_| who.kbo), ..Scope::default() };
        who.require("POST", "/audit/requests", &scope, &self.changes.handle.model())?;
        let Some(requester) = requester else {
            return Err(refuse(Code::AdminRoleMissing, format!("no designation in force for {owner}'s trail")));
        };
        let j = Justification::required(q.justification)?;
        if requester.role == RequesterRole::Police && j.legal_reference.as_deref().is_none_or(|r| r.trim().is_empty()) {
            return Err(refuse(
                Code::JustificationMissing,
                "the police must give the apostille's number in justification.legal_reference",
            ));
        }
        let (_, subjects) = selector(q.subject.as_deref(), q.caller.as_deref())?;
        let from_ms = q.from.as_deref().map(|s| time_ms(s, "from")).transpose()?.unwrap_or(0);
        let to_ms = q.to.as_deref().map(|s| time_ms(s, "to")).transpose()?.unwrap_or(u64::MAX);
        if from_ms > to_ms {
            return Err(refuse(Code::RequestInvalid, "from is after to"));
        }
        let caller_kbo = q.caller.as_deref().map(|c| kbo(c, "caller")).transpose()?.map(digits);
        let mut inquiry = Inquiry {
            id: String::new(),
            requester: digits(who.kbo),
            role: requester.role,
            owner: digits(owner),
            subject: subjects.first().cloned(),
            caller: caller_kbo,
            from_ms,
            to_ms,
            justification: j,
            submitted_at_ms: now,
            state: State::Submitted,
            advice: None,
        };
        let id = loop {
            let id = format!("AR-{now}-{}", NEXT.fetch_add(1, Ordering::Relaxed));
            inquiry.id.clone_from(&id);
            let bytes = serde_json::to_vec(&inquiry).map_err(|_| refuse(Code::Internal, "encoding failed"))?;
            let key = format!("{INQUIRIES}{id}");
            if blocking(&self.store, move |s| s.meta_create(&key, &bytes)).await? {
                break id;
            }
        };
        let j = &inquiry.justification;
        self.record_step(
            caller,
            &id,
            "POST /audit/requests",
            subjects,
            format!(
                "filed for the trail of {}: case {}; legal ground: {}; legal reference: {}; requested by: {}",
                inquiry.owner,
                j.case_reference,
                j.legal_ground,
                j.legal_reference.as_deref().unwrap_or("none"),
                j.requested_by
            ),
        )
        .await?;
        Ok(json(StatusCode::CREATED, &inquiry_view(&inquiry)))
    }

    /// Whether the caller may see `q`: its requester, or the privacy office of its data
    /// owner's sources.
    fn may_see(&self, who: &Who, path: &str, q: &Inquiry) -> Result<(), Refusal> {
        let owner = kbo(&q.owner, "owner")?;
        let mut scope = self.owner_scope(owner);
        scope.org = Kbo::parse(&q.requester).ok();
        who.require("GET", path, &scope, &self.changes.handle.model())?;
        Ok(())
    }

    pub(super) async fn list_inquiries(&self, caller: &Caller) -> Result<Response<Body>, Refusal> {
        let who = self.allowed(caller, "GET", "/audit/requests", &Scope::default())?;
        let all: Vec<Inquiry> = blocking(&self.store, |s| s.meta_scan(INQUIRIES))
            .await?
            .iter()
            .map(|(_, v)| decode(v))
            .collect::<Result<_, _>>()?;
        let items: Vec<serde_json::Value> =
            all.iter().filter(|q| self.may_see(&who, "/audit/requests/{id}", q).is_ok()).map(inquiry_view).collect();
        Ok(json(StatusCode::OK, &serde_json::json!({ "count": items.len(), "items": items })))
    }

    pub(super) async fn get_inquiry(&self, id: &str, caller: &Caller) -> Result<Response<Body>, Refusal> {
        let (q, _) = self.inquiry(id).await?;
        self.may_see(&self.who(caller)?, "/audit/requests/{id}", &q)?;
        Ok(json(StatusCode::OK, &inquiry_view(&q)))
    }

    pub(super) async fn advise_inquiry(
        &self,
        id: &str,
        req: Request<super::ReqBody>,
        caller: &Caller,
    ) -> Result<Response<Body>, Refusal> {
        let who = self.who(caller)?;
        let a: NewAdvice = read_json(req).await?;
        let (mut q, old) = self.inquiry(id).await?;
        let owner = kbo(&q.owner, "owner")?;
        who.require("POST", "/audit/requests/{id}/advice", &self.owner_scope(owner), &self.changes.handle.model())?;
        if q.requester == digits(who.kbo) {
            return Err(refuse(Code::AdminRoleMissing, "the requester cannot advise on its own inquiry"));
        }
        if q.state != State::Submitted {
            return Err(refuse(Code::TransitionNotAllowed, "the inquiry has already been advised on"));
        }
        if a.reason.trim().is_empty() {
            return Err(refuse(
                Code::RequestInvalid,
                "reason must say why (the examination of motivation and proportionality)",
            ));
        }
        // The advice's record comes first: an approved inquiry reads the trail before it.
        let verdict = if a.favourable { "favourable" } else { "unfavourable" };
        let record = self
            .record_step(
                caller,
                &q.id,
                "POST /audit/requests/{id}/advice",
                q.subject.iter().cloned().collect(),
                format!("{verdict} advice: {}", a.reason.trim()),
            )
            .await?;
        let now = self.changes.handle.now_ms();
        q.state = if a.favourable { State::Approved } else { State::Rejected };
        if a.favourable {
            q.to_ms = q.to_ms.min(now);
        }
        q.advice = Some(Advice {
            favourable: a.favourable,
            reason: a.reason.trim().to_owned(),
            by: digits(who.kbo),
            at_ms: now,
            record,
        });
        let bytes = serde_json::to_vec(&q).map_err(|_| refuse(Code::Internal, "encoding failed"))?;
        let key = format!("{INQUIRIES}{id}");
        if !blocking(&self.store, move |s| s.meta_swap(&key, &old, &bytes)).await? {
            // Recorded but not stored: the trail shows an advice that did not take; say so.
            return Err(refuse(
                Code::ConcurrentChange,
                "the inquiry changed meanwhile; this advice did not take, retry",
            ));
        }
        Ok(json(StatusCode::OK, &inquiry_view(&q)))
    }

    pub(super) async fn inquiry_results(
        &self,
        id: &str,
        req: &Request<super::ReqBody>,
        caller: &Caller,
    ) -> Result<Response<Body>, Refusal> {
        let (q, _) = self.inquiry(id).await?;
        self.may_see(&self.who(caller)?, "/audit/requests/{id}/results", &q)?;
        let Some(advice) = q.advice.as_ref().filter(|_| q.state == State::Approved) else {
            return Err(refuse(Code::TransitionNotAllowed, "the inquiry has no favourable advice; nothing runs"));
        };
        let query = req.uri().query();
        let cursor = routes::query_param(query, "cursor").map(|c| Cursor::parse(&c)).transpose()?;
        let limit = routes::query_param(query, "limit")
            .map(|l| l.parse::<u64>().map_err(|_| refuse(Code::RequestInvalid, "limit must be between 1 and 10000")))
            .transpose()?;
        let limit = page_limit(limit)?;
        let selector = match (&q.subject, &q.caller) {
            (Some(s), _) => Selector::Subject(s.index_key()),
            (None, Some(c)) => Selector::Caller(c.clone()),
            (None, None) => Selector::Time,
        };
        let query_record = self
            .record_step(
                caller,
                &q.id,
                "GET /audit/requests/{id}/results",
                q.subject.iter().cloned().collect(),
                format!("result read (case {})", q.justification.case_reference),
            )
            .await?;
        let page = self.find_page(selector, (q.from_ms, q.to_ms), cursor, limit, advice.record).await?;
        // Only the records about the data owner's sources.
        let p = self.changes.handle.model();
        let theirs = |service: &str| {
            let source = service.split_once('.').map_or(service, |(s, _)| s);
            p.sources.iter().any(|s| s.id == source && digits(s.owner) == q.owner)
        };
        let records: Vec<serde_json::Value> = page
            .records
            .into_iter()
            .filter(|(_, r)| r.record.service.as_deref().is_some_and(theirs))
            .map(|(rep, r)| record_json(rep, &r))
            .collect();
        Ok(json(
            StatusCode::OK,
            &serde_json::json!({
                "request": q.id, "query_record": query_record, "count": records.len(),
                "next_cursor": page.next.map(|c| c.to_string()), "records": records,
            }),
        ))
    }
}

const fn role_name(r: RequesterRole) -> &'static str {
    match r {
        RequesterRole::Prosecutor => "prosecutor",
        RequesterRole::InvestigatingJudge => "investigating judge",
        RequesterRole::Police => "police",
        RequesterRole::Ict => "ICT services",
        RequesterRole::ServiceDesk => "service desk",
        RequesterRole::DisciplinaryAuthority => "disciplinary authority",
    }
}
