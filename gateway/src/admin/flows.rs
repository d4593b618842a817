//! Data owners' flow management on the control plane: organisations, sources, services,
//! instruments with their lifecycles, adhesions, end-user roles, exceptional accesses, the
//! change history, and bundle import/export.
//!
//! Who may do what:
//! * the integrator (an organisation of kind `integrator`) manages everything;
//! * a data owner manages the instruments about its own sources (those its grants' services
//!   belong to, or the one it names in `source`), and registers its sources and their services;
//! * an organisation adheres to a general instrument itself (or its data owner records it),
//!   manages its own end users' roles, and asks for exceptional accesses for them;
//! * any registered organisation reads.
//!
//! Every change goes through [`Changes::apply`]: validated as a whole, committed to the store
//! with its version, recorded in the audit trail, then swapped in for the data plane.

use http::{Request, Response, StatusCode};
use hyper::body::Incoming;
use policies::ids::Kbo;
use policies::lifecycle::{self, TransitionError};
use policies::model::{
    Adhesion, ConventionState, ExceptionalAccess, Instrument, InstrumentKind, OrgKind, Organisation, Policy, Role,
    Service, Source, Status,
};
use serde::Deserialize;

use super::routes::query_param;
use super::{ControlPlane, json, read_json, refuse};
use crate::error::{Body, Code, Refusal};
use crate::pipeline::identity::Caller;
use crate::policy::{Actor, Change, ChangeError, Edit};
use crate::store::StoreError;

const DAY_MS: u64 = 86_400_000;

/// The calling organisation, as the policy knows it.
struct Who {
    kbo: Kbo,
    kind: Option<OrgKind>,
    actor: Actor,
}

impl Who {
    fn is_integrator(&self) -> bool {
        self.kind == Some(OrgKind::Integrator)
    }

    fn registered(&self) -> Result<OrgKind, Refusal> {
        self.kind.ok_or_else(|| refuse(Code::AdminRoleMissing, "the certificate's organisation is not registered"))
    }

    /// Whether this organisation manages `ins`: the integrator, or the data owner of every
    /// source the instrument is about.
    fn manages(&self, policy: &Policy, ins: &Instrument) -> bool {
        if self.is_integrator() {
            return true;
        }
        let sources = ins.sources();
        self.kind == Some(OrgKind::DataOwner)
            && !sources.is_empty()
            && sources.iter().all(|s| policy.sources.iter().any(|x| x.id == *s && x.owner == self.kbo))
    }

    fn must_manage(&self, policy: &Policy, ins: &Instrument) -> Result<(), Refusal> {
        if self.manages(policy, ins) {
            return Ok(());
        }
        let owners: Vec<String> = ins
            .sources()
            .iter()
            .map(|s| match policy.sources.iter().find(|x| x.id == *s) {
                Some(x) => format!("{s} (data owner {})", x.owner),
                None => format!("{s} (unknown source)"),
            })
            .collect();
        Err(refuse(
            Code::AdminRoleMissing,
            if owners.is_empty() {
                format!("instrument '{}' names no source; only the integrator manages it", ins.reference)
            } else {
                format!(
                    "only the data owner of its sources or the integrator manages instrument '{}': {}",
                    ins.reference,
                    owners.join(", ")
                )
            },
        ))
    }
}

fn find_instrument<'p>(policy: &'p mut Policy, reference: &str) -> Result<&'p mut Instrument, Refusal> {
    policy
        .instruments
        .iter_mut()
        .find(|i| i.reference == reference)
        .ok_or_else(|| refuse(Code::ResourceUnknown, format!("no instrument '{reference}'")))
}

/// Maps a failed change to its refusal. Validation errors about the edited item have their
/// `prefix` (e.g. `instruments[12] "X".`) removed, so the detail names the body's own keys.
fn change_failed(e: ChangeError, prefix: Option<&str>) -> Refusal {
    match e {
        ChangeError::Refused(r) => r,
        ChangeError::Invalid(errors) => {
            let protocol = errors.0.iter().any(|e| e.key.contains(".protocol"));
            let detail: Vec<String> = errors
                .0
                .iter()
                .map(|e| {
                    let key = prefix.and_then(|p| e.key.strip_prefix(p)).unwrap_or(&e.key);
                    if key.is_empty() { e.message.clone() } else { format!("{key}: {}", e.message) }
                })
                .collect();
            refuse(if protocol { Code::ProtocolIncomplete } else { Code::PolicyInvalid }, detail.join("; "))
        }
        ChangeError::Store(StoreError::Conflict(_)) => refuse(
            Code::ConcurrentChange,
            "another replica changed the policy at the same time; nothing was changed, retry",
        ),
        ChangeError::Store(err) if err.is_unavailable() => {
            tracing::error!(error = %err, "policy store unavailable");
            refuse(Code::StoreUnavailable, "the store cannot be reached; nothing was changed")
        }
        ChangeError::Store(err) => {
            tracing::error!(error = %err, "policy store write failed");
            refuse(Code::Internal, "the change could not be stored; nothing was changed")
        }
        ChangeError::Audit => {
            refuse(Code::AuditUnavailable, "the change could not be recorded in the audit trail; nothing was changed")
        }
        ChangeError::Internal(m) => {
            tracing::error!(error = %m, "policy change failed");
            refuse(Code::Internal, "the change failed; nothing was changed")
        }
    }
}

/// Adds a newly registered item, unless its identifier is `taken`.
fn append<T>(list: &mut Vec<T>, item: T, taken: bool, target: String, summary: String) -> Result<Edit, Refusal> {
    if taken {
        return Err(refuse(Code::AlreadyExists, format!("{target} is already registered")));
    }
    list.push(item);
    Ok(Edit { target, summary, ..Edit::default() })
}

fn changed(status: StatusCode, change: &Change, item: serde_json::Value) -> Response<Body> {
    json(status, &serde_json::json!({ "change": change, "item": item }))
}

/// The answer to a change of an instrument: the change and the instrument as it now stands.
fn instrument_changed(status: StatusCode, change: &Change, policy: &Policy, reference: &str) -> Response<Body> {
    let item = policy.instruments.iter().find(|i| i.reference == reference).map(instrument_view);
    changed(status, change, item.unwrap_or_default())
}

/// An instrument as the API shows it: the document plus its effective status.
fn instrument_view(ins: &Instrument) -> serde_json::Value {
    let mut v = serde_json::json!(ins);
    v["effective_status"] = serde_json::json!(ins.effective_status().as_str());
    v["state_or_status"] = serde_json::json!(lifecycle::state_of(ins));
    v
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct TransitionBody {
    to: String,
    #[serde(default)]
    reason: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RemarkBody {
    remark: String,
}

/// When an exceptional access is approved tacitly (Unix ms), unless remarked before.
fn approval_ms(x: &ExceptionalAccess) -> u64 {
    x.approved_from_day().max(0) as u64 * DAY_MS
}

fn date_of_ms(ms: u64) -> String {
    policies::model::Date::from_days((ms / DAY_MS) as i64).map(|d| d.to_string()).unwrap_or_default()
}

impl ControlPlane {
    fn who(&self, caller: &Caller) -> Result<Who, Refusal> {
        let org = caller.org()?;
        let kind = self.changes.handle.current().organisation(org.kbo).map(|o| o.kind);
        Ok(Who { kbo: org.kbo, kind, actor: Actor { kbo: Some(org.kbo), fingerprint: Some(org.fingerprint_hex()) } })
    }

    /// Any registered organisation reads the policy's public-sector resources.
    fn reader(&self, caller: &Caller) -> Result<Who, Refusal> {
        let who = self.who(caller)?;
        who.registered()?;
        Ok(who)
    }

    pub(super) async fn list(
        &self,
        what: &str,
        req: &Request<Incoming>,
        caller: &Caller,
    ) -> Result<Response<Body>, Refusal> {
        self.reader(caller)?;
        let p = self.changes.handle.model();
        let query = req.uri().query();
        let items: Vec<serde_json::Value> = match what {
            "organisations" => p.organisations.iter().map(|o| serde_json::json!(o)).collect(),
            "sources" => p.sources.iter().map(|o| serde_json::json!(o)).collect(),
            "services" => p.services.iter().map(|o| serde_json::json!(o)).collect(),
            "instruments" => {
                let kind = query_param(query, "kind");
                p.instruments
                    .iter()
                    .filter(|i| kind.as_deref().is_none_or(|k| i.kind.as_str() == k))
                    .map(instrument_view)
                    .collect()
            }
            "roles" => {
                let org = query_param(query, "org")
                    .map(|o| Kbo::parse(&o).map_err(|e| refuse(Code::RequestInvalid, format!("org: {e}"))))
                    .transpose()?;
                p.roles.iter().filter(|r| org.is_none_or(|o| r.org == o)).map(|o| serde_json::json!(o)).collect()
            }
            "exceptional-accesses" => {
                let now = self.changes.handle.now_ms();
                p.exceptional_access
                    .iter()
                    .map(|x| {
                        let deadline = approval_ms(x);
                        let status = if x.remark {
                            "refused (a remark was made within 7 days of the advice)".to_owned()
                        } else if now < deadline {
                            format!("awaiting remarks until {} (exclusive)", date_of_ms(deadline))
                        } else {
                            format!("approved tacitly on {}", date_of_ms(deadline))
                        };
                        let mut v = serde_json::json!(x);
                        v["approval"] = serde_json::json!(status);
                        v
                    })
                    .collect()
            }
            _ => return Err(refuse(Code::ServiceUnknown, "no control-plane resource at this path")),
        };
        Ok(json(
            StatusCode::OK,
            &serde_json::json!({ "version": self.changes.handle.version(), "count": items.len(), "items": items }),
        ))
    }

    pub(super) async fn get_instrument(&self, reference: &str, caller: &Caller) -> Result<Response<Body>, Refusal> {
        self.reader(caller)?;
        let p = self.changes.handle.model();
        let ins = p
            .instruments
            .iter()
            .find(|i| i.reference == reference)
            .ok_or_else(|| refuse(Code::ResourceUnknown, format!("no instrument '{reference}'")))?;
        Ok(json(StatusCode::OK, &instrument_view(ins)))
    }

    /// Applies `edit` for `who` and answers `status` with the change and `item`.
    async fn commit<F>(
        &self,
        who: &Who,
        op: &str,
        status: StatusCode,
        item: serde_json::Value,
        edit: F,
    ) -> Result<Response<Body>, Refusal>
    where
        F: FnOnce(&mut Policy, u64) -> Result<Edit, Refusal>,
    {
        let (change, _) = self.changes.apply(&who.actor, op, edit).await.map_err(|e| change_failed(e, None))?;
        Ok(changed(status, &change, item))
    }

    pub(super) async fn add_organisation(
        &self,
        req: Request<Incoming>,
        caller: &Caller,
    ) -> Result<Response<Body>, Refusal> {
        let who = self.who(caller)?;
        if !who.is_integrator() {
            return Err(refuse(Code::AdminRoleMissing, "only the integrator registers organisations"));
        }
        let org: Organisation = read_json(req).await?;
        let item = serde_json::json!(org);
        self.commit(&who, "POST /organisations", StatusCode::CREATED, item, |p, _| {
            let taken = p.organisations.iter().any(|o| o.kbo == org.kbo);
            let (target, summary) =
                (format!("organisation {}", org.kbo), format!("registered as {}", org.kind.as_str()));
            append(&mut p.organisations, org, taken, target, summary)
        })
        .await
    }

    pub(super) async fn add_source(&self, req: Request<Incoming>, caller: &Caller) -> Result<Response<Body>, Refusal> {
        let who = self.who(caller)?;
        let source: Source = read_json(req).await?;
        if !(who.is_integrator() || (who.kind == Some(OrgKind::DataOwner) && source.owner == who.kbo)) {
            return Err(refuse(
                Code::AdminRoleMissing,
                "a data owner registers its own sources (owner must be the caller)",
            ));
        }
        let item = serde_json::json!(source);
        self.commit(&who, "POST /sources", StatusCode::CREATED, item, |p, _| {
            let taken = p.sources.iter().any(|s| s.id == source.id);
            let target = format!("source {}", source.id);
            append(&mut p.sources, source, taken, target, "registered".to_owned())
        })
        .await
    }

    pub(super) async fn add_service(&self, req: Request<Incoming>, caller: &Caller) -> Result<Response<Body>, Refusal> {
        let who = self.who(caller)?;
        let service: Service = read_json(req).await?;
        let item = serde_json::json!(service);
        self.commit(&who, "POST /services", StatusCode::CREATED, item, |p, _| {
            let owner = p.sources.iter().find(|s| s.id == service.source).map(|s| s.owner);
            if !(who.is_integrator() || (who.kind == Some(OrgKind::DataOwner) && owner == Some(who.kbo))) {
                return Err(refuse(Code::AdminRoleMissing, "only the data owner of the source registers its services"));
            }
            let taken = p.services.iter().any(|s| s.id == service.id);
            let (target, summary) =
                (format!("service {}", service.id), format!("registered with {} field(s)", service.fields.len()));
            append(&mut p.services, service, taken, target, summary)
        })
        .await
    }

    pub(super) async fn add_instrument(
        &self,
        req: Request<Incoming>,
        caller: &Caller,
    ) -> Result<Response<Body>, Refusal> {
        let who = self.who(caller)?;
        let mut ins: Instrument = read_json(req).await?;
        if !ins.adhesions.is_empty() {
            return Err(refuse(
                Code::RequestInvalid,
                "adhesions are recorded one by one with POST /instruments/{reference}/adhesions",
            ));
        }
        if ins.suspended_from.is_some() || ins.suspended_reason.is_some() {
            return Err(refuse(Code::TransitionNotAllowed, "a new instrument cannot start suspended"));
        }
        match ins.kind {
            InstrumentKind::Convention => match ins.state {
                None | Some(ConventionState::Requested) => ins.state = Some(ConventionState::Requested),
                Some(s) => {
                    return Err(refuse(
                        Code::TransitionNotAllowed,
                        format!("a convention starts as requested, not {}; then follow its lifecycle", s.as_str()),
                    ));
                }
            },
            _ => match ins.status {
                None => ins.status = Some(Status::Draft),
                Some(Status::Draft | Status::Test | Status::Active) => {}
                Some(s) => {
                    return Err(refuse(
                        Code::TransitionNotAllowed,
                        format!("a new instrument starts as draft, test or active, not {}", s.as_str()),
                    ));
                }
            },
        }
        let reference = ins.reference.clone();
        let mut prefix = String::new();
        let (change, policy) = self
            .changes
            .apply(&who.actor, "POST /instruments", |p, _| {
                if p.instruments.iter().any(|i| i.reference == ins.reference) {
                    return Err(refuse(
                        Code::AlreadyExists,
                        format!("instrument '{}' is already registered", ins.reference),
                    ));
                }
                who.must_manage(p, &ins)?;
                prefix = format!("instruments[{}] \"{}\".", p.instruments.len(), ins.reference);
                let e = Edit {
                    target: format!("instrument {}", ins.reference),
                    summary: format!("registered ({})", lifecycle::state_of(&ins)),
                    instrument: Some(ins.reference.clone()),
                    ..Edit::default()
                };
                p.instruments.push(ins);
                Ok(e)
            })
            .await
            .map_err(|e| change_failed(e, Some(&prefix)))?;
        Ok(instrument_changed(StatusCode::CREATED, &change, &policy, &reference))
    }

    pub(super) async fn transition(
        &self,
        reference: &str,
        req: Request<Incoming>,
        caller: &Caller,
    ) -> Result<Response<Body>, Refusal> {
        let who = self.who(caller)?;
        let body: TransitionBody = read_json(req).await?;
        let op = "POST /instruments/{reference}/transitions";
        let (change, policy) = self
            .changes
            .apply(&who.actor, op, |p, _| {
                let snapshot = p.clone();
                let ins = find_instrument(p, reference)?;
                who.must_manage(&snapshot, ins)?;
                if ins.kind == InstrumentKind::Convention && body.to == ConventionState::DeliberationReceived.as_str() {
                    // The deliberation the convention rests on must be there and in force.
                    let parent = ins.parent.as_deref().unwrap_or_default();
                    let ok = snapshot.instruments.iter().any(|i| {
                        i.reference == parent
                            && matches!(i.kind, InstrumentKind::Deliberation | InstrumentKind::General)
                            && i.effective_status() == Status::Active
                    });
                    if !ok {
                        return Err(refuse(
                            Code::TransitionNotAllowed,
                            format!("the deliberation '{parent}' the convention rests on is not registered and active"),
                        ));
                    }
                }
                let summary = lifecycle::transition(ins, &body.to, body.reason.as_deref()).map_err(|e| match e {
                    TransitionError::UnknownState { .. } => refuse(Code::RequestInvalid, e.to_string()),
                    TransitionError::ReasonRequired => refuse(Code::RequestInvalid, e.to_string()),
                    TransitionError::NotAllowed { .. } => refuse(Code::TransitionNotAllowed, e.to_string()),
                })?;
                Ok(Edit {
                    target: format!("instrument {reference}"),
                    summary,
                    reason: ins.suspended_reason.clone(),
                    instrument: Some(reference.to_owned()),
                })
            })
            .await
            .map_err(|e| change_failed(e, None))?;
        Ok(instrument_changed(StatusCode::OK, &change, &policy, reference))
    }

    pub(super) async fn adhere(
        &self,
        reference: &str,
        req: Request<Incoming>,
        caller: &Caller,
    ) -> Result<Response<Body>, Refusal> {
        let who = self.who(caller)?;
        let adhesion: Adhesion = read_json(req).await?;
        let item = serde_json::json!(adhesion);
        let op = "POST /instruments/{reference}/adhesions";
        self.commit(&who, op, StatusCode::CREATED, item, |p, _| {
            let snapshot = p.clone();
            let kind = snapshot.organisations.iter().find(|o| o.kbo == adhesion.org).map(|o| o.kind);
            let ins = find_instrument(p, reference)?;
            if adhesion.org != who.kbo {
                who.must_manage(&snapshot, ins)?;
            }
            if ins.kind != InstrumentKind::General {
                return Err(refuse(
                    Code::RequestInvalid,
                    format!("'{reference}' is not a general instrument; only those take adhesions"),
                ));
            }
            let Some(kind) = kind else {
                return Err(refuse(Code::ResourceUnknown, format!("organisation {} is not registered", adhesion.org)));
            };
            if !ins.eligible.contains(&kind) {
                let open: Vec<&str> = ins.eligible.iter().map(|k| k.as_str()).collect();
                return Err(refuse(
                    Code::AdhesionNotEligible,
                    format!(
                        "a {} cannot adhere to '{reference}': it is open to {} only",
                        kind.as_str(),
                        open.join(", ")
                    ),
                ));
            }
            if ins.adhesions.iter().any(|a| a.org == adhesion.org) {
                return Err(refuse(
                    Code::AlreadyExists,
                    format!("organisation {} has already adhered to '{reference}'", adhesion.org),
                ));
            }
            if ins.effective_status() != Status::Active {
                return Err(refuse(
                    Code::TransitionNotAllowed,
                    format!("'{reference}' is {}; adhesions are taken while it is active", lifecycle::state_of(ins)),
                ));
            }
            let e = Edit {
                target: format!("instrument {reference}"),
                summary: format!("adhesion of {} (DPO advice {})", adhesion.org, adhesion.dpo_advice),
                instrument: Some(reference.to_owned()),
                ..Edit::default()
            };
            ins.adhesions.push(adhesion);
            Ok(e)
        })
        .await
    }

    pub(super) async fn put_role(&self, req: Request<Incoming>, caller: &Caller) -> Result<Response<Body>, Refusal> {
        let who = self.who(caller)?;
        let role: Role = read_json(req).await?;
        if !(who.is_integrator() || role.org == who.kbo) {
            return Err(refuse(Code::AdminRoleMissing, "an organisation manages the roles of its own end users"));
        }
        let item = serde_json::json!(role);
        self.commit(&who, "POST /roles", StatusCode::OK, item, |p, _| {
            let existing =
                p.roles.iter_mut().find(|r| r.org == role.org && r.end_user == role.end_user && r.role == role.role);
            let summary = format!("valid {} to {}", role.valid_from, role.valid_until);
            let (summary, target) = (summary, format!("role {} of an end user of {}", role.role, role.org));
            match existing {
                Some(r) => {
                    *r = role;
                    Ok(Edit { target, summary: format!("renewed: {summary}"), ..Edit::default() })
                }
                None => {
                    p.roles.push(role);
                    Ok(Edit { target, summary: format!("granted: {summary}"), ..Edit::default() })
                }
            }
        })
        .await
    }

    pub(super) async fn add_exceptional(
        &self,
        req: Request<Incoming>,
        caller: &Caller,
    ) -> Result<Response<Body>, Refusal> {
        let who = self.who(caller)?;
        let x: ExceptionalAccess = read_json(req).await?;
        if x.remark {
            return Err(refuse(Code::RequestInvalid, "a remark is made with POST /exceptional-accesses/{id}/remark"));
        }
        let item = serde_json::json!(x);
        self.commit(&who, "POST /exceptional-accesses", StatusCode::CREATED, item, |p, _| {
            if x.org != who.kbo {
                let snapshot = p.clone();
                let ins = find_instrument(p, &x.instrument)?;
                who.must_manage(&snapshot, ins)?;
            }
            if p.exceptional_access.iter().any(|e| e.id == x.id) {
                return Err(refuse(Code::AlreadyExists, format!("exceptional access '{}' already exists", x.id)));
            }
            let e = Edit {
                target: format!("exceptional access {}", x.id),
                summary: format!("requested; advice of {}, tacit approval after 7 days", x.advice_date),
                instrument: Some(x.instrument.clone()),
                ..Edit::default()
            };
            p.exceptional_access.push(x);
            Ok(e)
        })
        .await
    }

    pub(super) async fn remark(
        &self,
        id: &str,
        req: Request<Incoming>,
        caller: &Caller,
    ) -> Result<Response<Body>, Refusal> {
        let who = self.who(caller)?;
        let body: RemarkBody = read_json(req).await?;
        if body.remark.trim().is_empty() {
            return Err(refuse(Code::RequestInvalid, "remark must say what the objection is"));
        }
        let op = "POST /exceptional-accesses/{id}/remark";
        let (change, policy) = self
            .changes
            .apply(&who.actor, op, |p, now| {
                let snapshot = p.clone();
                let x = p
                    .exceptional_access
                    .iter_mut()
                    .find(|x| x.id == id)
                    .ok_or_else(|| refuse(Code::ResourceUnknown, format!("no exceptional access '{id}'")))?;
                let ins = snapshot.instruments.iter().find(|i| i.reference == x.instrument);
                match ins {
                    Some(ins) => who.must_manage(&snapshot, ins)?,
                    None if who.is_integrator() => {}
                    None => return Err(refuse(Code::AdminRoleMissing, "only the integrator manages this access")),
                }
                if x.remark {
                    return Err(refuse(Code::AlreadyExists, "a remark was already made; the access is refused"));
                }
                let deadline = approval_ms(x);
                if now >= deadline {
                    return Err(refuse(
                        Code::TransitionNotAllowed,
                        format!(
                            "no remark came within 7 days of the advice of {}: the access was approved tacitly on {}",
                            x.advice_date,
                            date_of_ms(deadline)
                        ),
                    ));
                }
                x.remark = true;
                Ok(Edit {
                    target: format!("exceptional access {id}"),
                    summary: "remark within 7 days: not approved".to_owned(),
                    reason: Some(body.remark.trim().to_owned()),
                    instrument: Some(x.instrument.clone()),
                })
            })
            .await
            .map_err(|e| change_failed(e, None))?;
        let item = policy.exceptional_access.iter().find(|x| x.id == id).map(|x| serde_json::json!(x));
        Ok(changed(StatusCode::OK, &change, item.unwrap_or_default()))
    }

    pub(super) async fn history(&self, req: &Request<Incoming>, caller: &Caller) -> Result<Response<Body>, Refusal> {
        let who = self.who(caller)?;
        let kind = who.registered()?;
        if !(matches!(kind, OrgKind::Integrator | OrgKind::DataOwner) || self.auditors.contains(&who.kbo)) {
            return Err(refuse(
                Code::AdminRoleMissing,
                "the change history is for the integrator, data owners and auditors",
            ));
        }
        let q = req.uri().query();
        let num = |name: &str| -> Result<Option<u64>, Refusal> {
            query_param(q, name)
                .map(|v| v.parse::<u64>().map_err(|_| refuse(Code::RequestInvalid, format!("{name} must be a number"))))
                .transpose()
        };
        let after = num("after")?.unwrap_or(0);
        let limit = num("limit")?.unwrap_or(1000).min(10_000) as usize;
        let changes = self.changes.history(after, limit).await.map_err(|e| change_failed(e, None))?;
        Ok(json(
            StatusCode::OK,
            &serde_json::json!({ "version": self.changes.handle.version(), "count": changes.len(), "changes": changes }),
        ))
    }

    pub(super) async fn export(&self, caller: &Caller) -> Result<Response<Body>, Refusal> {
        let who = self.who(caller)?;
        if !who.is_integrator() {
            return Err(refuse(Code::AdminRoleMissing, "only the integrator exports the policy"));
        }
        let text = export_toml(&self.changes.handle.model(), self.changes.handle.version())
            .map_err(|e| refuse(Code::Internal, format!("export failed: {e}")))?;
        let mut r = Response::new(http_body_util::Full::new(bytes::Bytes::from(text)));
        r.headers_mut().insert(http::header::CONTENT_TYPE, http::HeaderValue::from_static("application/toml"));
        Ok(r)
    }

    pub(super) async fn import(&self, req: Request<Incoming>, caller: &Caller) -> Result<Response<Body>, Refusal> {
        let who = self.who(caller)?;
        if !who.is_integrator() {
            return Err(refuse(Code::AdminRoleMissing, "only the integrator imports a policy"));
        }
        let body = http_body_util::BodyExt::collect(http_body_util::Limited::new(req.into_body(), super::MAX_IMPORT))
            .await
            .map_err(|_| refuse(Code::RequestInvalid, "the body is unreadable or larger than 4 MiB"))?
            .to_bytes();
        let text = std::str::from_utf8(&body).map_err(|_| refuse(Code::RequestInvalid, "the bundle is not UTF-8"))?;
        let policy = policies::bundle::load_texts([("import", text)]).map_err(|e| {
            refuse(Code::PolicyInvalid, e.0.iter().map(ToString::to_string).collect::<Vec<_>>().join("; "))
        })?;
        let n = policy.instruments.len();
        let change = self
            .changes
            .import(&who.actor, "POST /policy/import", policy, format!("imported a bundle of {n} instrument(s)"))
            .await
            .map_err(|e| change_failed(e, None))?;
        Ok(json(StatusCode::OK, &serde_json::json!({ "change": change })))
    }
}

impl ControlPlane {
    /// The same reload as SIGHUP: TLS material and bundles, from the configuration file.
    pub(super) async fn reload(&self, caller: &Caller) -> Result<Response<Body>, Refusal> {
        let who = self.who(caller)?;
        if !who.is_integrator() {
            return Err(refuse(Code::AdminRoleMissing, "only the integrator reloads the gateway"));
        }
        let done = self.reloader.reload().await.map_err(|e| {
            refuse(Code::ReloadFailed, format!("nothing was changed: {}", super::first_line(&format!("{e:#}"))))
        })?;
        Ok(json(StatusCode::OK, &serde_json::json!(done)))
    }
}

/// The policy as one TOML bundle, re-importable as is.
pub fn export_toml(policy: &Policy, version: u64) -> Result<String, toml::ser::Error> {
    let body = toml::to_string(policy)?;
    Ok(format!("# Passerelle policy, version {version}, exported from the store.\n{body}"))
}
