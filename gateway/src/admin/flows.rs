//! Data owners' flow management on the control plane: organisations, sources, services,
//! instruments with their lifecycles, adhesions, end-user roles, exceptional accesses, the
//! change history, and bundle import/export.
//!
//! Who may do what is the role table of [`super::authority`]: every handler names its
//! operation there and asks [`Who::require`] on the policy as the change would leave it.
//! Reads are need to know: an organisation sees its own roles, requests and instruments, and
//! those about the sources it owns; the publication is the public view.
//!
//! Every change goes through [`Changes::apply`]: validated as a whole, committed to the store
//! with its version, recorded in the audit trail, then swapped in for the data plane.

use std::collections::{BTreeSet, HashSet};

use http::{Request, Response, StatusCode};
use policies::ids::Kbo;
use policies::lifecycle;
use policies::model::{
    ConventionState, Date, ExceptionalAccess, Instrument, InstrumentKind, Organisation, Policy, Role, Service, Source,
    Status,
};
use serde::Deserialize;

use super::authority::{Scope, Who};
use super::routes::query_param;
use super::{ControlPlane, json, read_json, refuse};
use crate::error::{Body, Code, Refusal};
use crate::pipeline::identity::Caller;
use crate::policy::{Actor, Change, ChangeError, Edit};
use crate::store::StoreError;

const DAY_MS: u64 = 86_400_000;

pub(super) fn find_instrument<'p>(policy: &'p mut Policy, reference: &str) -> Result<&'p mut Instrument, Refusal> {
    policy
        .instruments
        .iter_mut()
        .find(|i| i.reference == reference)
        .ok_or_else(|| refuse(Code::ResourceUnknown, format!("no instrument '{reference}'")))
}

/// Maps a failed change to its refusal. Validation errors about the edited item have their
/// `prefix` (e.g. `instruments[12] "X".`) removed, so the detail names the body's own keys.
pub(super) fn change_failed(e: ChangeError, prefix: Option<&str>) -> Refusal {
    match e {
        ChangeError::Refused(r) => r,
        ChangeError::Invalid(errors) => {
            let protocol = errors.0.iter().any(|e| e.key.contains(".protocol") || e.key.ends_with(".dpo_advice"));
            let detail: Vec<String> = errors
                .0
                .iter()
                .map(|e| {
                    let key = prefix.and_then(|p| e.key.strip_prefix(p)).unwrap_or(&e.key);
                    if key.is_empty() { e.message.clone() } else { format!("{key}: {}", e.message) }
                })
                .collect();
            let registration = errors.0.iter().any(|e| e.key == "registration");
            let code = if protocol {
                Code::ProtocolIncomplete
            } else if registration {
                Code::RegistrationInvalid
            } else {
                Code::PolicyInvalid
            };
            refuse(code, detail.join("; "))
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

pub(super) fn changed(status: StatusCode, change: &Change, item: serde_json::Value) -> Response<Body> {
    json(status, &serde_json::json!({ "change": change, "item": item }))
}

/// The answer to a change of an instrument: the change and the instrument as it now stands.
pub(super) fn instrument_changed(
    status: StatusCode,
    change: &Change,
    policy: &Policy,
    reference: &str,
) -> Response<Body> {
    let item = policy.instruments.iter().find(|i| i.reference == reference).map(instrument_view);
    changed(status, change, item.unwrap_or_default())
}

/// An instrument as the API shows it: the document plus its effective status.
pub(super) fn instrument_view(ins: &Instrument) -> serde_json::Value {
    let mut v = serde_json::json!(ins);
    v["effective_status"] = serde_json::json!(ins.effective_status().as_str());
    v["state_or_status"] = serde_json::json!(lifecycle::state_of(ins));
    v["next_states"] = serde_json::json!(lifecycle::next_of(ins));
    let signed = ins.signed_matrix();
    let adhesions: serde_json::Map<String, serde_json::Value> = ins
        .adhesions
        .iter()
        .map(|a| {
            let next: Vec<&str> = lifecycle::adhesion_next(a.state, signed).iter().map(|s| s.as_str()).collect();
            (a.org.digits(&mut [0u8; 10]).to_owned(), serde_json::json!(next))
        })
        .collect();
    v["adhesion_next_steps"] = serde_json::Value::Object(adhesions);
    v
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RemarkBody {
    pub(super) remark: String,
}

/// An exceptional access as its requester files it: no date (the advice starts the 7 days).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct AccessRequest {
    id: String,
    instrument: String,
    /// The requesting organisation; the caller when absent.
    #[serde(default)]
    org: Option<Kbo>,
    end_user: String,
    service: String,
    purposes: Vec<String>,
    fields: Vec<String>,
    justification: String,
    valid_until: Date,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct AdviceBody {
    /// The reference of the advice (the privacy office's file).
    reference: String,
    favourable: bool,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct WithdrawBody {
    pub(super) reason: String,
}

/// When an exceptional access is approved tacitly (Unix ms), if it can be.
fn approval_ms(x: &ExceptionalAccess) -> Option<u64> {
    x.approved_from_day().map(|d| d.max(0) as u64 * DAY_MS)
}

pub(super) fn date_of_ms(ms: u64) -> String {
    today(ms).map(|d| d.to_string()).unwrap_or_default()
}

/// The calendar day (UTC) of a time in Unix ms.
pub(super) fn today(ms: u64) -> Option<Date> {
    Date::from_days((ms / DAY_MS) as i64)
}

/// Where an exceptional access stands, in words, at `now` (Unix ms).
fn approval_state(x: &ExceptionalAccess, now: u64) -> String {
    if x.withdrawn {
        return "withdrawn".to_owned();
    }
    if x.remark {
        return "refused (a remark was made within 7 days of the advice)".to_owned();
    }
    if x.advice_unfavourable {
        return "refused (the privacy office's advice is unfavourable)".to_owned();
    }
    match approval_ms(x) {
        None => "awaiting the privacy office's advice".to_owned(),
        Some(deadline) if now < deadline => format!("awaiting remarks until {} (exclusive)", date_of_ms(deadline)),
        Some(deadline) => format!("approved tacitly on {}", date_of_ms(deadline)),
    }
}

/// The common name of a PEM certificate.
fn certificate_name(pem: &str) -> Option<String> {
    use x509_parser::prelude::FromDer as _;
    let (_, p) = x509_parser::pem::parse_x509_pem(pem.as_bytes()).ok()?;
    let (_, cert) = x509_parser::prelude::X509Certificate::from_der(&p.contents).ok()?;
    cert.subject().iter_common_name().next().and_then(|c| c.as_str().ok()).map(str::to_owned)
}

/// The difference an import would make, by kind of item and key.
fn diff(old: &Policy, new: &Policy) -> serde_json::Value {
    fn part<T: serde::Serialize>(old: &[T], new: &[T], key: impl Fn(&T) -> String) -> serde_json::Value {
        let keyed = |v: &[T]| -> std::collections::BTreeMap<String, serde_json::Value> {
            v.iter().map(|x| (key(x), serde_json::json!(x))).collect()
        };
        let (a, b) = (keyed(old), keyed(new));
        let added: Vec<&String> = b.keys().filter(|k| !a.contains_key(*k)).collect();
        let removed: Vec<&String> = a.keys().filter(|k| !b.contains_key(*k)).collect();
        let changed: Vec<&String> =
            a.iter().filter(|(k, v)| b.get(*k).is_some_and(|w| w != *v)).map(|(k, _)| k).collect();
        serde_json::json!({ "added": added, "removed": removed, "changed": changed })
    }
    serde_json::json!({
        "organisations": part(&old.organisations, &new.organisations, |o| o.kbo.to_string()),
        "sources": part(&old.sources, &new.sources, |s| s.id.clone()),
        "services": part(&old.services, &new.services, |s| s.id.clone()),
        "instruments": part(&old.instruments, &new.instruments, |i| i.reference.clone()),
        "roles": part(&old.roles, &new.roles, |r| format!("{} {} {}", r.org, r.end_user, r.role)),
        "exceptional_access": part(&old.exceptional_access, &new.exceptional_access, |x| x.id.clone()),
    })
}

impl ControlPlane {
    pub(super) fn who(&self, caller: &Caller) -> Result<Who, Refusal> {
        let org = caller.org()?;
        let snapshot = self.changes.handle.current();
        let registered = snapshot.organisation(org.kbo);
        if registered.is_some_and(|o| !o.accepts(Some(&org.fingerprint))) {
            return Err(refuse(Code::ClientCertInvalid, policies::Reason::CertificateNotPinned.message()));
        }
        let kind = registered.map(|o| o.kind);
        Ok(Who {
            kbo: org.kbo,
            kind,
            actor: Actor { kbo: Some(org.kbo), fingerprint: Some(org.fingerprint_hex()) },
            auditor: self.auditors.contains(&org.kbo),
        })
    }

    /// The caller, once it holds a role of `method path`'s row on `scope` in the policy in
    /// force.
    pub(super) fn allowed(&self, caller: &Caller, method: &str, path: &str, scope: &Scope) -> Result<Who, Refusal> {
        let who = self.who(caller)?;
        who.require(method, path, scope, &self.changes.handle.model())?;
        Ok(who)
    }

    pub(super) async fn list(
        &self,
        what: &str,
        req: &Request<super::ReqBody>,
        caller: &Caller,
    ) -> Result<Response<Body>, Refusal> {
        let who = self.allowed(caller, "GET", &format!("/{what}"), &Scope::default())?;
        let p = self.changes.handle.model();
        let query = req.uri().query();
        let mine = who.own_sources(&p);
        let all = who.sees_all();
        let items: Vec<serde_json::Value> = match what {
            "organisations" => p.organisations.iter().map(|o| serde_json::json!(o)).collect(),
            "sources" => p.sources.iter().map(|o| serde_json::json!(o)).collect(),
            "services" => p.services.iter().map(|o| serde_json::json!(o)).collect(),
            "instruments" => {
                let kind = query_param(query, "kind");
                const KINDS: [&str; 6] =
                    ["deliberation", "general", "protocol", "convention", "statutory", "access-matrix"];
                if let Some(k) = kind.as_deref().filter(|k| !KINDS.contains(k)) {
                    return Err(refuse(
                        Code::RequestInvalid,
                        format!("kind must be one of {}, not {k:?}", KINDS.join(", ")),
                    ));
                }
                if query.is_some_and(|q| q.split('&').filter(|kv| kv.starts_with("kind=")).count() > 1) {
                    return Err(refuse(Code::RequestInvalid, "kind is given once"));
                }
                p.instruments
                    .iter()
                    .filter(|i| kind.as_deref().is_none_or(|k| i.kind.as_str() == k))
                    .filter(|i| all || Self::knows(&who, &p, &mine, i))
                    .map(instrument_view)
                    .collect()
            }
            "roles" => {
                let org = query_param(query, "org")
                    .map(|o| Kbo::parse(&o).map_err(|e| refuse(Code::RequestInvalid, format!("org: {e}"))))
                    .transpose()?;
                // The roles the caller's own instruments require (a data owner sees who may
                // call its sources in which capacity).
                let required: BTreeSet<&str> = p
                    .instruments
                    .iter()
                    .filter(|i| i.sources().iter().any(|s| mine.contains(*s)))
                    .flat_map(|i| i.grants.iter().filter_map(|g| g.end_user_role.as_deref()))
                    .collect();
                p.roles
                    .iter()
                    .filter(|r| org.is_none_or(|o| r.org == o))
                    .filter(|r| all || r.org == who.kbo || required.contains(r.role.as_str()))
                    .map(|o| serde_json::json!(o))
                    .collect()
            }
            "exceptional-accesses" => {
                let now = self.changes.handle.now_ms();
                p.exceptional_access
                    .iter()
                    .filter(|x| {
                        all || x.org == who.kbo || Scope::exceptional(&p, x).sources.iter().any(|s| mine.contains(s))
                    })
                    .map(|x| {
                        let mut v = serde_json::json!(x);
                        v["approval"] = serde_json::json!(approval_state(x, now));
                        v["approved_from"] = serde_json::json!(x.approved_from_day().and_then(Date::from_days));
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

    /// Whether the caller needs to know `ins`: it is about a source the caller owns or
    /// advises on (`mine`, [`Who::own_sources`]), the caller issued it, or it names the caller
    /// as a recipient.
    fn knows(who: &Who, policy: &Policy, mine: &HashSet<String>, ins: &Instrument) -> bool {
        let scope = Scope::instrument(ins, who.registered());
        scope.org.is_some()
            || scope.sources.iter().any(|s| mine.contains(s))
            || who.holds(super::authority::Role::IssuingAuthority, &scope, policy)
    }

    pub(super) async fn get_instrument(&self, reference: &str, caller: &Caller) -> Result<Response<Body>, Refusal> {
        let who = self.who(caller)?;
        let p = self.changes.handle.model();
        let ins = p
            .instruments
            .iter()
            .find(|i| i.reference == reference)
            .ok_or_else(|| refuse(Code::ResourceUnknown, format!("no instrument '{reference}'")))?;
        if !(who.sees_all() || Self::knows(&who, &p, &who.own_sources(&p), ins)) {
            who.require("GET", "/instruments/{reference}", &Scope::instrument(ins, who.registered()), &p)?;
        }
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

    /// Signs a registered organisation's certificate request with the gateway's own CA
    /// (`POST /organisations/{kbo}/certificates`) and records the certificate with the
    /// organisation, as one audited change.
    pub(super) async fn sign_request(
        &self,
        kbo: &str,
        req: Request<super::ReqBody>,
        caller: &Caller,
    ) -> Result<Response<Body>, Refusal> {
        #[derive(Deserialize)]
        #[serde(deny_unknown_fields)]
        struct SignBody {
            #[serde(default)]
            csr: Option<String>,
            #[serde(default)]
            certificate: Option<String>,
        }
        let org = Kbo::parse(kbo).map_err(|e| refuse(Code::RequestInvalid, format!("kbo: {e}")))?;
        let who = self.who(caller)?;
        let body: SignBody = read_json(req).await?;
        let model = self.changes.handle.model();
        let Some(registered) = model.organisations.iter().find(|o| o.kbo == org) else {
            return Err(refuse(Code::ResourceUnknown, format!("organisation {org} is not registered")));
        };
        who.require("POST", "/organisations/{kbo}/certificates", &Scope::org(org), &model)?;
        let now = self.changes.handle.now_ms();
        // A request the gateway's CA signs, or a certificate another CA issued, registered
        // (and, for a pinned organisation, the only ones that identify it).
        let (pem, identity, verb) = match (body.csr, body.certificate) {
            (Some(csr), None) => {
                let Some((signer, days)) = &self.issuer else {
                    return Err(refuse(
                        Code::ResourceUnknown,
                        "this gateway signs no certificates (control.issuer is not configured); ask the CA that issues them",
                    ));
                };
                let at = time::OffsetDateTime::from_unix_timestamp_nanos(i128::from(now) * 1_000_000)
                    .map_err(|_| refuse(Code::Internal, "the gateway's clock is out of range"))?;
                let signed = signer.sign(&csr, org, *days, at).map_err(|e| refuse(Code::CsrInvalid, e.to_string()))?;
                (signed.cert_pem, signed.identity, format!("signed, valid {days} days"))
            }
            (None, Some(pem)) => {
                // A pinned organisation's list is the integrator's to widen.
                if !who.is_integrator() {
                    return Err(refuse(
                        Code::AdminRoleMissing,
                        "only the integrator registers a certificate another CA issued",
                    ));
                }
                let invalid = |m: String| refuse(Code::CsrInvalid, m);
                let (_, block) = x509_parser::pem::parse_x509_pem(pem.as_bytes())
                    .map_err(|_| invalid("certificate: not a PEM certificate".to_owned()))?;
                let id =
                    certs::OrgIdentity::from_der(&block.contents).map_err(|e| invalid(format!("certificate: {e}")))?;
                if id.kbo != org {
                    return Err(invalid(format!("certificate: it carries enterprise number {}, not {org}", id.kbo)));
                }
                (pem, id, "registered".to_owned())
            }
            _ => return Err(refuse(Code::RequestInvalid, "give either csr or certificate")),
        };
        let record = policies::model::OrgCertificate {
            fingerprint: identity.fingerprint_hex(),
            common_name: certificate_name(&pem).unwrap_or_else(|| registered.name.clone()),
            environment: identity.environment.map(|e| e.as_str().to_owned()),
            issued_at: super::rfc3339(now).unwrap_or_default(),
            not_after: identity.not_after,
        };
        let item = serde_json::json!({
            "certificate": pem,
            "fingerprint": record.fingerprint,
            "not_after": super::rfc3339(u64::try_from(identity.not_after).unwrap_or(0) * 1000),
        });
        self.commit(&who, "POST /organisations/{kbo}/certificates", StatusCode::CREATED, item, |p, _| {
            let o = p
                .organisations
                .iter_mut()
                .find(|o| o.kbo == org)
                .ok_or_else(|| refuse(Code::ResourceUnknown, format!("organisation {org} is not registered")))?;
            if o.certificates.iter().any(|c| c.fingerprint == record.fingerprint) {
                return Err(refuse(Code::AlreadyExists, "this certificate is already registered"));
            }
            let summary = format!(
                "certificate {} {verb} ({})",
                &record.fingerprint[..16],
                record.environment.as_deref().unwrap_or("PRD")
            );
            o.certificates.push(record);
            Ok(Edit { target: format!("organisation {org}"), summary, ..Edit::default() })
        })
        .await
    }

    pub(super) async fn add_organisation(
        &self,
        req: Request<super::ReqBody>,
        caller: &Caller,
    ) -> Result<Response<Body>, Refusal> {
        let who = self.allowed(caller, "POST", "/organisations", &Scope::default())?;
        let org: Organisation = read_json(req).await?;
        if !org.certificates.is_empty() {
            return Err(refuse(
                Code::RequestInvalid,
                "certificates are recorded when the gateway signs them (POST /organisations/{kbo}/certificates)",
            ));
        }
        let item = serde_json::json!(org);
        self.commit(&who, "POST /organisations", StatusCode::CREATED, item, |p, _| {
            let taken = p.organisations.iter().any(|o| o.kbo == org.kbo);
            let (target, summary) =
                (format!("organisation {}", org.kbo), format!("registered as {}", org.kind.as_str()));
            append(&mut p.organisations, org, taken, target, summary)
        })
        .await
    }

    pub(super) async fn add_source(
        &self,
        req: Request<super::ReqBody>,
        caller: &Caller,
    ) -> Result<Response<Body>, Refusal> {
        let who = self.who(caller)?;
        let source: Source = read_json(req).await?;
        if !who.is_integrator()
            && (source.ceiling.is_some() || source.privacy_office.is_some() || source.ict_office.is_some())
        {
            return Err(refuse(
                Code::AdminRoleMissing,
                "only the integrator declares a source's statutory ceiling, its privacy office or its ICT office",
            ));
        }
        // The TLS files are on the gateway's host: only its operator's organisation names them.
        if !who.is_integrator() && source.upstream.as_ref().is_some_and(|u| u.tls.is_some()) {
            return Err(refuse(
                Code::AdminRoleMissing,
                "only the integrator names the TLS files (on the gateway's host) of a source's upstream",
            ));
        }
        let item = serde_json::json!(source);
        self.commit(&who, "POST /sources", StatusCode::CREATED, item, |p, _| {
            let taken = p.sources.iter().any(|s| s.id == source.id);
            let target = format!("source {}", source.id);
            let scope = Scope::sources([source.id.clone()]);
            let e = append(&mut p.sources, source, taken, target, "registered".to_owned())?;
            // The roles as the policy would stand: a data owner registers its own sources.
            who.require("POST", "/sources", &scope, p)?;
            Ok(e)
        })
        .await
    }

    pub(super) async fn add_service(
        &self,
        req: Request<super::ReqBody>,
        caller: &Caller,
    ) -> Result<Response<Body>, Refusal> {
        let who = self.who(caller)?;
        let mut service: Service = read_json(req).await?;
        // A registered service's fields are its catalogue's, unless the body lists them too.
        if let Some(x) = &service.exposure
            && service.fields.is_empty()
        {
            let mut fields: Vec<String> = x.catalogue.iter().filter_map(|c| c.field.clone()).collect();
            fields.sort_unstable();
            fields.dedup();
            service.fields = fields;
        }
        let item = serde_json::json!(service);
        self.commit(&who, "POST /services", StatusCode::CREATED, item, |p, _| {
            who.require("POST", "/services", &Scope::sources([service.source.clone()]), p)?;
            let taken = p.services.iter().any(|s| s.id == service.id);
            let (target, summary) =
                (format!("service {}", service.id), format!("registered with {} field(s)", service.fields.len()));
            append(&mut p.services, service, taken, target, summary)
        })
        .await
    }

    pub(super) async fn add_instrument(
        &self,
        req: Request<super::ReqBody>,
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
        // What the procedure's steps record is never given at registration: the DPO gives its
        // advice, the parties sign, the data owner sends the convention's versions.
        let given: Vec<&str> = [
            ("dpo_advice", ins.dpo_advice.is_some()),
            ("advice", !ins.advice.is_empty()),
            ("signatures", !ins.signatures.is_empty()),
            ("steps", !ins.steps.is_empty()),
            ("contact", ins.contact.is_some()),
            ("text_version", ins.text_version.is_some()),
            ("layout_version", ins.layout_version.is_some()),
        ]
        .into_iter()
        .filter_map(|(k, set)| set.then_some(k))
        .collect();
        if !given.is_empty() {
            return Err(refuse(
                Code::RequestInvalid,
                format!(
                    "{} are recorded by the steps of the procedure (advice, transitions), not at registration",
                    given.join(", ")
                ),
            ));
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
            // A protocol is never created in force: it follows its lifecycle from draft.
            _ if ins.is_protocol() => match ins.status {
                None | Some(Status::Draft) => ins.status = Some(Status::Draft),
                Some(s) => {
                    return Err(refuse(
                        Code::TransitionNotAllowed,
                        format!("a protocol starts as draft, not {}; then follow its lifecycle", s.as_str()),
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
                // Registering an instrument is never acting for oneself: no caller in the scope.
                who.require("POST", "/instruments", &Scope::instrument(&ins, None), p)?;
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

    pub(super) async fn put_role(
        &self,
        req: Request<super::ReqBody>,
        caller: &Caller,
    ) -> Result<Response<Body>, Refusal> {
        let who = self.who(caller)?;
        let role: Role = read_json(req).await?;
        if role.withdrawn.is_some() {
            return Err(refuse(Code::RequestInvalid, "a role is withdrawn with POST /roles/withdraw"));
        }
        who.require("POST", "/roles", &Scope::org(role.org), &self.changes.handle.model())?;
        let item = serde_json::json!(role);
        self.commit(&who, "POST /roles", StatusCode::OK, item, |p, _| {
            let existing =
                p.roles.iter_mut().find(|r| r.org == role.org && r.end_user == role.end_user && r.role == role.role);
            let summary = format!("valid {} to {}", role.valid_from, role.valid_until);
            let (summary, target) = (summary, format!("role {} of an end user of {}", role.role, role.org));
            match existing {
                // A data owner's withdrawal binds the employer: only the integrator grants again.
                Some(r) if r.withdrawn.as_ref().is_some_and(|w| w.by != r.org) && !who.is_integrator() => Err(refuse(
                    Code::TransitionNotAllowed,
                    "the data owner withdrew this role; the employer cannot grant it again",
                )),
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

    /// An exceptional access, as its requester files it (seed 004 §4): without effect until the
    /// privacy office advises.
    pub(super) async fn add_exceptional(
        &self,
        req: Request<super::ReqBody>,
        caller: &Caller,
    ) -> Result<Response<Body>, Refusal> {
        let who = self.who(caller)?;
        let r: AccessRequest = read_json(req).await?;
        if r.justification.trim().is_empty() {
            return Err(refuse(Code::RequestInvalid, "justification must say why the access is needed"));
        }
        let now = self.changes.handle.now_ms();
        if today(now).is_some_and(|t| r.valid_until < t) {
            return Err(refuse(Code::RequestInvalid, "valid_until is in the past"));
        }
        let x = ExceptionalAccess {
            id: r.id,
            instrument: r.instrument,
            org: r.org.unwrap_or(who.kbo),
            end_user: r.end_user,
            service: r.service,
            purposes: r.purposes,
            fields: r.fields,
            justification: Some(r.justification.trim().to_owned()),
            advice_date: None,
            advice: None,
            advice_unfavourable: false,
            remark: false,
            withdrawn: false,
            valid_until: r.valid_until,
        };
        who.require("POST", "/exceptional-accesses", &Scope::org(x.org), &self.changes.handle.model())?;
        let item = serde_json::json!(x);
        let mut prefix = String::new();
        let (change, _) = self
            .changes
            .apply(&who.actor, "POST /exceptional-accesses", |p, _| {
                if p.exceptional_access.iter().any(|e| e.id == x.id) {
                    return Err(refuse(Code::AlreadyExists, format!("exceptional access '{}' already exists", x.id)));
                }
                if !p.instruments.iter().any(|i| i.reference == x.instrument) {
                    return Err(refuse(Code::ResourceUnknown, format!("no instrument '{}'", x.instrument)));
                }
                prefix = format!("exceptional_access[{}].", p.exceptional_access.len());
                let e = Edit {
                    target: format!("exceptional access {}", x.id),
                    summary: "requested; awaiting the privacy office's advice".to_owned(),
                    reason: x.justification.clone(),
                    instrument: Some(x.instrument.clone()),
                };
                p.exceptional_access.push(x);
                Ok(e)
            })
            .await
            .map_err(|e| change_failed(e, Some(&prefix)))?;
        Ok(changed(StatusCode::CREATED, &change, item))
    }

    /// Changes one exceptional access for a caller holding a role of `path`'s row on it.
    async fn change_exceptional<F>(
        &self,
        id: &str,
        path: &str,
        caller: &Caller,
        edit: F,
    ) -> Result<Response<Body>, Refusal>
    where
        F: FnOnce(&mut ExceptionalAccess, u64) -> Result<(String, Option<String>), Refusal>,
    {
        let who = self.who(caller)?;
        let op = format!("POST {path}");
        let (change, policy) = self
            .changes
            .apply(&who.actor, &op, |p, now| {
                let snapshot = p.clone();
                let x = p
                    .exceptional_access
                    .iter_mut()
                    .find(|x| x.id == id)
                    .ok_or_else(|| refuse(Code::ResourceUnknown, format!("no exceptional access '{id}'")))?;
                who.require("POST", path, &Scope::exceptional(&snapshot, x), &snapshot)?;
                if x.withdrawn {
                    return Err(refuse(Code::TransitionNotAllowed, "the access was withdrawn"));
                }
                let (summary, reason) = edit(x, now)?;
                Ok(Edit {
                    target: format!("exceptional access {id}"),
                    summary,
                    reason,
                    instrument: Some(x.instrument.clone()),
                })
            })
            .await
            .map_err(|e| change_failed(e, None))?;
        let now = self.changes.handle.now_ms();
        let item = policy.exceptional_access.iter().find(|x| x.id == id).map(|x| {
            let mut v = serde_json::json!(x);
            v["approval"] = serde_json::json!(approval_state(x, now));
            v
        });
        Ok(changed(StatusCode::OK, &change, item.unwrap_or_default()))
    }

    /// The privacy office's advice: the gateway's clock stamps it, and the 7 days start.
    pub(super) async fn advise(
        &self,
        id: &str,
        req: Request<super::ReqBody>,
        caller: &Caller,
    ) -> Result<Response<Body>, Refusal> {
        let body: AdviceBody = read_json(req).await?;
        if body.reference.trim().is_empty() {
            return Err(refuse(Code::RequestInvalid, "reference must name the advice"));
        }
        self.change_exceptional(id, "/exceptional-accesses/{id}/advice", caller, |x, now| {
            if x.advice_date.is_some() {
                return Err(refuse(Code::AlreadyExists, "the privacy office has already given its advice"));
            }
            if x.remark {
                return Err(refuse(Code::TransitionNotAllowed, "the data owner has already refused the access"));
            }
            let day = today(now).ok_or_else(|| refuse(Code::Internal, "the gateway's clock is out of range"))?;
            x.advice_date = Some(day);
            x.advice = Some(body.reference.trim().to_owned());
            x.advice_unfavourable = !body.favourable;
            let summary = if body.favourable {
                format!(
                    "favourable advice on {day}; approved tacitly on {} unless remarked",
                    date_of_ms(approval_ms(x).unwrap_or_default())
                )
            } else {
                format!("unfavourable advice on {day}: not approved")
            };
            Ok((summary, Some(body.reference.trim().to_owned())))
        })
        .await
    }

    /// The data owner's remark within 7 days of the advice: the access is not approved.
    pub(super) async fn remark(
        &self,
        id: &str,
        req: Request<super::ReqBody>,
        caller: &Caller,
    ) -> Result<Response<Body>, Refusal> {
        let body: RemarkBody = read_json(req).await?;
        if body.remark.trim().is_empty() {
            return Err(refuse(Code::RequestInvalid, "remark must say what the objection is"));
        }
        self.change_exceptional(id, "/exceptional-accesses/{id}/remark", caller, |x, now| {
            if x.remark {
                return Err(refuse(Code::AlreadyExists, "a remark was already made; the access is refused"));
            }
            if let (Some(advice), Some(deadline)) = (x.advice_date, approval_ms(x))
                && now >= deadline
            {
                return Err(refuse(
                    Code::TransitionNotAllowed,
                    format!(
                        "no remark came within 7 days of the advice of {advice}: the access was approved tacitly on {}; withdraw it instead",
                        date_of_ms(deadline)
                    ),
                ));
            }
            x.remark = true;
            Ok(("remark within 7 days: not approved".to_owned(), Some(body.remark.trim().to_owned())))
        })
        .await
    }

    /// Withdrawal at any time, by the data owner, the requester or the integrator.
    pub(super) async fn withdraw(
        &self,
        id: &str,
        req: Request<super::ReqBody>,
        caller: &Caller,
    ) -> Result<Response<Body>, Refusal> {
        let body: WithdrawBody = read_json(req).await?;
        if body.reason.trim().is_empty() {
            return Err(refuse(Code::RequestInvalid, "reason must say why the access is withdrawn"));
        }
        self.change_exceptional(id, "/exceptional-accesses/{id}/withdraw", caller, |x, _| {
            x.withdrawn = true;
            Ok(("withdrawn: no longer approved".to_owned(), Some(body.reason.trim().to_owned())))
        })
        .await
    }

    pub(super) async fn history(
        &self,
        req: &Request<super::ReqBody>,
        caller: &Caller,
    ) -> Result<Response<Body>, Refusal> {
        let who = self.who(caller)?;
        let p = self.changes.handle.model();
        let owned = Scope::sources(p.sources.iter().filter(|s| s.owner == who.kbo).map(|s| s.id.clone()));
        who.require("GET", "/changes", &owned, &p)?;
        let q = req.uri().query();
        let num = |name: &str| -> Result<Option<u64>, Refusal> {
            query_param(q, name)
                .map(|v| v.parse::<u64>().map_err(|_| refuse(Code::RequestInvalid, format!("{name} must be a number"))))
                .transpose()
        };
        let after = num("after")?.unwrap_or(0);
        let limit = super::page_limit(num("limit")?)?;
        let changes = self.changes.history(after, limit).await.map_err(|e| change_failed(e, None))?;
        Ok(json(
            StatusCode::OK,
            &serde_json::json!({ "version": self.changes.handle.version(), "count": changes.len(), "changes": changes }),
        ))
    }

    pub(super) async fn export(&self, caller: &Caller) -> Result<Response<Body>, Refusal> {
        self.allowed(caller, "GET", "/policy/export", &Scope::default())?;
        let text = export_toml(&self.changes.handle.model(), self.changes.handle.version())
            .map_err(|e| refuse(Code::Internal, format!("export failed: {e}")))?;
        let mut r = Response::new(http_body_util::Full::new(bytes::Bytes::from(text)));
        r.headers_mut().insert(http::header::CONTENT_TYPE, http::HeaderValue::from_static("application/toml"));
        Ok(r)
    }

    pub(super) async fn import(
        &self,
        req: Request<super::ReqBody>,
        caller: &Caller,
    ) -> Result<Response<Body>, Refusal> {
        let who = self.allowed(caller, "POST", "/policy/import", &Scope::default())?;
        let dry_run = match query_param(req.uri().query(), "dry_run").as_deref() {
            None | Some("false") => false,
            Some("true") => true,
            Some(_) => return Err(refuse(Code::RequestInvalid, "dry_run must be true or false")),
        };
        let body = http_body_util::BodyExt::collect(http_body_util::Limited::new(req.into_body(), super::MAX_IMPORT))
            .await
            .map_err(|_| refuse(Code::RequestInvalid, "the body is unreadable or larger than 4 MiB"))?
            .to_bytes();
        let text = std::str::from_utf8(&body).map_err(|_| refuse(Code::RequestInvalid, "the bundle is not UTF-8"))?;
        if text.trim().is_empty() {
            return Err(refuse(
                Code::RequestInvalid,
                "the body is empty: an import replaces the whole policy and needs a bundle",
            ));
        }
        let policy = policies::bundle::load_texts([("import", text)]).map_err(|e| {
            refuse(Code::PolicyInvalid, e.0.iter().map(ToString::to_string).collect::<Vec<_>>().join("; "))
        })?;
        crate::policy::import_guard(&policy, Some(who.kbo)).map_err(|m| refuse(Code::PolicyInvalid, m))?;
        if dry_run {
            let current = self.changes.handle.model();
            return Ok(json(
                StatusCode::OK,
                &serde_json::json!({
                    "dry_run": true,
                    "version": self.changes.handle.version(),
                    "diff": diff(&current, &policy),
                }),
            ));
        }
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
        self.allowed(caller, "POST", "/reload", &Scope::default())?;

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
