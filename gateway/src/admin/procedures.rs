//! The seeds' procedures as state machines on the control plane, each step taken by the role
//! the procedure table ([`super::authority::STEPS`]) names and kept with its evidence: who
//! (the certificate's organisation and the role it held), when (the gateway's clock, never a
//! date the caller chooses), why (a reason), and the documents (references or SHA-256
//! digests).
//!
//! * Conventions (seed 000): the deliberation received, the convention sent with its text and
//!   layout versions, the beneficiary's signature with its contact form, the test phase, the
//!   data owner's countersignature that activates it, the publication; suspension and end.
//! * Other instruments: draft → test → active …; a protocol enters into force only after a
//!   favourable advice of the DPO of its sources (decree of 18 July 2008, art. 8).
//! * Adhesions (seed 001): request (official name, seat, requesting person, reference,
//!   evaluation form) → examination by the issuing authority → onboarding → active, or
//!   refused; withdrawn at any time.
//! * Usage conventions (seed 003): an access matrix open to some kinds is signed by each user
//!   (its adhesion request names the signatory) and made active by the data owner's
//!   countersignature, given as a document; ended by either party.
//! * Roles (seed 003): the data owner of a matrix sets the longest validity of the roles it
//!   requires and may withdraw one officer's role.
//! * DAM sheets (seed 004 §5): ICT's advice, then the SSIPVP's, then 7 days for a remark.

use http::{Request, Response, StatusCode};
use policies::ids::Kbo;
use policies::lifecycle::{self, TransitionError};
use policies::model::{
    Adhesion, AdhesionState, Advice, Contact, ConventionState, DamAccess, DamSheet, Date, Document, InstrumentKind,
    Policy, Signature, Status, Step,
};
use serde::Deserialize;

use super::authority::{Role, Scope, Who};
use super::flows::{
    RemarkBody, WithdrawBody, change_failed, changed, date_of_ms, find_instrument, instrument_changed, today,
};
use super::{ControlPlane, json, read_json, refuse, rfc3339};
use crate::error::{Body, Code, Refusal};
use crate::pipeline::identity::Caller;
use crate::policy::Edit;

const DAY_MS: u64 = 86_400_000;

/// A trimmed, non-empty text, or the refusal naming `what`.
fn text(v: Option<&str>, what: &str) -> Result<String, Refusal> {
    v.map(str::trim)
        .filter(|s| !s.is_empty())
        .map(str::to_owned)
        .ok_or_else(|| refuse(Code::RequestInvalid, format!("{what} is required for this step")))
}

fn documents_valid(docs: &[Document]) -> Result<(), Refusal> {
    for d in docs {
        if d.title.trim().is_empty() {
            return Err(refuse(Code::RequestInvalid, "every document has a title"));
        }
        match (&d.reference, &d.sha256) {
            (_, Some(h)) if h.len() != 64 || !h.bytes().all(|b| b.is_ascii_hexdigit()) => {
                return Err(refuse(Code::RequestInvalid, format!("sha256 of '{}' is not 64 hex digits", d.title)));
            }
            (Some(r), _) if r.trim().is_empty() => {
                return Err(refuse(Code::RequestInvalid, format!("the reference of '{}' is empty", d.title)));
            }
            (None, None) => {
                return Err(refuse(
                    Code::RequestInvalid,
                    format!("document '{}' needs a reference or its sha256", d.title),
                ));
            }
            _ => {}
        }
    }
    Ok(())
}

/// The step as taken now by `who` in `role`.
fn step(to: &str, who: &Who, role: Role, now: u64, reason: Option<String>, documents: Vec<Document>) -> Step {
    Step {
        to: to.to_owned(),
        by: who.kbo,
        role: role.as_str().to_owned(),
        at: rfc3339(now).unwrap_or_default(),
        reason,
        documents,
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Signatory {
    name: String,
    capacity: String,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct TransitionBody {
    to: String,
    #[serde(default)]
    reason: Option<String>,
    #[serde(default)]
    documents: Vec<Document>,
    #[serde(default)]
    signatory: Option<Signatory>,
    #[serde(default)]
    text_version: Option<String>,
    #[serde(default)]
    layout_version: Option<String>,
    #[serde(default)]
    contact: Option<Contact>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct AdviceBody {
    reference: String,
    favourable: bool,
    #[serde(default)]
    documents: Vec<Document>,
}

/// An adhesion request as the organisation files it (seed 001 §3): no date, no state.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct AdhesionRequest {
    /// The adhering organisation; the caller when absent.
    #[serde(default)]
    org: Option<Kbo>,
    official_name: String,
    seat: String,
    requested_by: String,
    capacity: String,
    reference: String,
    #[serde(default)]
    dpo_advice: Option<String>,
    #[serde(default)]
    evaluation_form: Option<Document>,
    #[serde(default)]
    mandate: Option<Document>,
    modalities_confirmed: bool,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct StepBody {
    to: String,
    #[serde(default)]
    reason: Option<String>,
    #[serde(default)]
    documents: Vec<Document>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RoleWithdrawal {
    org: Kbo,
    end_user: String,
    role: String,
    reason: String,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct DamRequest {
    id: String,
    instrument: String,
    #[serde(default)]
    org: Option<Kbo>,
    objectives: String,
    methodology: String,
    end_user_role: String,
    access: Vec<DamAccess>,
    purposes: Vec<String>,
    valid_until: Date,
}

/// Where a DAM sheet stands at `now` (Unix ms), in words.
fn dam_state(d: &DamSheet, now: u64) -> String {
    if d.withdrawn.is_some() {
        return "withdrawn".to_owned();
    }
    if d.remark.is_some() {
        return "refused (a remark was made within 7 days of the advice)".to_owned();
    }
    match (&d.ict_advice, &d.ssipvp_advice) {
        (None, _) => "awaiting ICT's advice".to_owned(),
        (Some(_), None) => "awaiting the privacy office's advice".to_owned(),
        (Some(i), Some(s)) if !i.favourable || !s.favourable => "refused (an advice is unfavourable)".to_owned(),
        _ => match d.approved_from_day() {
            Some(day) if now < day.max(0) as u64 * DAY_MS => {
                format!("awaiting remarks until {} (exclusive)", date_of_ms(day.max(0) as u64 * DAY_MS))
            }
            Some(day) => format!("authorized tacitly on {}", date_of_ms(day.max(0) as u64 * DAY_MS)),
            None => "refused".to_owned(),
        },
    }
}

fn dam_view(d: &DamSheet, now: u64) -> serde_json::Value {
    let mut v = serde_json::json!(d);
    v["approval"] = serde_json::json!(dam_state(d, now));
    v
}

/// What a DAM sheet is about: its matrix's sources and those of the services it pools, and its
/// requester.
fn dam_scope(policy: &Policy, d: &DamSheet) -> Scope {
    Scope::on_matrix(policy, &d.instrument, d.access.iter().map(|a| a.service.as_str()), d.org)
}

impl ControlPlane {
    /// Changes one instrument as `edit` says (given the policy as it stood), as one audited
    /// change; `edit` answers the change's summary and reason.
    async fn on_instrument<F>(
        &self,
        who: &Who,
        op: &str,
        reference: &str,
        edit: F,
    ) -> Result<(crate::policy::Change, std::sync::Arc<Policy>), Refusal>
    where
        F: FnOnce(&mut policies::model::Instrument, &Policy, u64) -> Result<(String, Option<String>), Refusal>,
    {
        self.changes
            .apply(&who.actor, op, |p, now| {
                let snapshot = p.clone();
                let ins = find_instrument(p, reference)?;
                let (summary, reason) = edit(ins, &snapshot, now)?;
                Ok(Edit {
                    target: format!("instrument {reference}"),
                    summary,
                    reason,
                    instrument: Some(reference.to_owned()),
                })
            })
            .await
            .map_err(|e| change_failed(e, None))
    }

    /// One step of an instrument's procedure (`POST /instruments/{reference}/transitions`).
    pub(super) async fn transition(
        &self,
        reference: &str,
        req: Request<super::ReqBody>,
        caller: &Caller,
    ) -> Result<Response<Body>, Refusal> {
        let who = self.who(caller)?;
        let body: TransitionBody = read_json(req).await?;
        documents_valid(&body.documents)?;
        let op = "POST /instruments/{reference}/transitions";
        let (change, policy) = self
            .on_instrument(&who, op, reference, |ins, snapshot, now| {
                let convention = ins.kind == InstrumentKind::Convention;
                let procedure = if convention { "convention" } else { "instrument" };
                // A convention's beneficiary (the organisation its grants name) signs itself.
                let mut scope = Scope::instrument(ins, who.registered());
                if convention {
                    let named = ins.grants.iter().find_map(|g| match g.recipient {
                        policies::model::Recipient::Org(k) => Some(k),
                        _ => None,
                    });
                    scope.org = named.or(scope.org);
                }
                let role = who.require_step(procedure, &body.to, &scope, snapshot)?;
                let from = lifecycle::state_of(ins);
                let reason = body.reason.as_deref().map(str::trim).filter(|r| !r.is_empty()).map(str::to_owned);
                let misplaced = |what: &str, at: &str| {
                    refuse(Code::RequestInvalid, format!("{what} is given at the step to {at} only"))
                };
                let is = |c: ConventionState| convention && body.to == c.as_str();
                if body.text_version.is_some() && !is(ConventionState::ConventionSent)
                    || body.layout_version.is_some() && !is(ConventionState::ConventionSent)
                {
                    return Err(misplaced("text_version and layout_version", "convention-sent"));
                }
                if body.contact.is_some() && !is(ConventionState::SignedByBeneficiary) {
                    return Err(misplaced("contact", "signed-by-beneficiary"));
                }
                let countersigning = is(ConventionState::Active) && from == ConventionState::TestPhase.as_str();
                if body.signatory.is_some() && !(is(ConventionState::SignedByBeneficiary) || countersigning) {
                    // Whether `active` carries a signature depends on where the convention stands.
                    return Err(refuse(
                        Code::TransitionNotAllowed,
                        format!("a signatory signs at signed-by-beneficiary and, from the test phase, at active; not from {from}"),
                    ));
                }
                if matches!(body.to.as_str(), "suspended" | "terminated" | "revoked") && reason.is_none() {
                    return Err(refuse(Code::RequestInvalid, format!("the step to {} needs a reason", body.to)));
                }
                if is(ConventionState::DeliberationReceived) {
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
                if ins.is_protocol()
                    && matches!(body.to.as_str(), "test" | "active")
                    && ins.effective_status() == Status::Draft
                    // The advice operation sets it exactly when the advice is favourable.
                    && ins.dpo_advice.is_none()
                {
                    return Err(refuse(
                        Code::TransitionNotAllowed,
                        "a protocol enters into force after a favourable advice of the DPO (POST /instruments/{reference}/advice)",
                    ));
                }
                let summary = lifecycle::transition(ins, &body.to, reason.as_deref()).map_err(|e| match e {
                    TransitionError::UnknownState { .. } | TransitionError::ReasonRequired => {
                        refuse(Code::RequestInvalid, e.to_string())
                    }
                    TransitionError::NotAllowed { .. } => refuse(Code::TransitionNotAllowed, e.to_string()),
                })?;
                // The evidence the step carries (checked after the move is known to be legal).
                if is(ConventionState::ConventionSent) {
                    ins.text_version = Some(text(body.text_version.as_deref(), "text_version")?);
                    ins.layout_version = Some(text(body.layout_version.as_deref(), "layout_version")?);
                }
                if is(ConventionState::SignedByBeneficiary) || countersigning {
                    let Some(s) = &body.signatory else {
                        let (code, detail) = if countersigning {
                            (Code::TransitionNotAllowed, "from the test phase, the step to active is the data owner's countersignature: give the signatory (name, capacity)")
                        } else {
                            (Code::RequestInvalid, "signatory (name, capacity) is required for this step")
                        };
                        return Err(refuse(code, detail));
                    };
                    let (party, expected) = if countersigning {
                        ("data-owner", Role::DataOwner)
                    } else {
                        ("beneficiary", Role::Itself)
                    };
                    if role != expected {
                        return Err(refuse(
                            Code::AdminRoleMissing,
                            format!("the {party}'s signature is given by the {party} itself"),
                        ));
                    }
                    ins.signatures.push(Signature {
                        party: party.to_owned(),
                        org: who.kbo,
                        name: text(Some(&s.name), "signatory.name")?,
                        capacity: text(Some(&s.capacity), "signatory.capacity")?,
                        at: rfc3339(now).unwrap_or_default(),
                    });
                }
                if is(ConventionState::SignedByBeneficiary) {
                    let c = body.contact.clone().ok_or_else(|| {
                        refuse(Code::RequestInvalid, "contact (the contact form: name, email) is required for this step")
                    })?;
                    if c.name.trim().is_empty() || !c.email.contains('@') {
                        return Err(refuse(Code::RequestInvalid, "contact needs a name and an e-mail address"));
                    }
                    ins.contact = Some(c);
                }
                let landed = lifecycle::state_of(ins).to_owned();
                ins.steps.push(step(&landed, &who, role, now, reason.clone(), body.documents.clone()));
                Ok((summary, ins.suspended_reason.clone().or(reason)))
            })
            .await?;
        Ok(instrument_changed(StatusCode::OK, &change, &policy, reference))
    }

    /// The DPO's advice on a protocol (`POST /instruments/{reference}/advice`).
    pub(super) async fn instrument_advice(
        &self,
        reference: &str,
        req: Request<super::ReqBody>,
        caller: &Caller,
    ) -> Result<Response<Body>, Refusal> {
        let who = self.who(caller)?;
        let body: AdviceBody = read_json(req).await?;
        let advice_ref = text(Some(&body.reference), "reference")?;
        documents_valid(&body.documents)?;
        let op = "POST /instruments/{reference}/advice";
        let (change, policy) = self
            .on_instrument(&who, op, reference, |ins, snapshot, now| {
                who.require("POST", "/instruments/{reference}/advice", &Scope::instrument(ins, None), snapshot)?;
                if !ins.is_protocol() {
                    return Err(refuse(Code::RequestInvalid, format!("'{reference}' is not a protocol")));
                }
                if !matches!(ins.effective_status(), Status::Draft | Status::Test) {
                    return Err(refuse(
                        Code::TransitionNotAllowed,
                        format!(
                            "'{reference}' is {}; the DPO advises before it enters into force",
                            lifecycle::state_of(ins)
                        ),
                    ));
                }
                ins.advice.push(Advice {
                    office: "dpo".to_owned(),
                    by: who.kbo,
                    reference: advice_ref.clone(),
                    favourable: body.favourable,
                    at: rfc3339(now).unwrap_or_default(),
                    documents: body.documents.clone(),
                });
                ins.dpo_advice = body.favourable.then(|| advice_ref.clone());
                let verdict = if body.favourable { "favourable" } else { "unfavourable" };
                Ok((format!("{verdict} DPO advice {advice_ref}"), Some(advice_ref.clone())))
            })
            .await?;
        Ok(instrument_changed(StatusCode::OK, &change, &policy, reference))
    }

    /// An adhesion request (`POST /instruments/{reference}/adhesions`): it opens nothing until
    /// the procedure makes it active.
    pub(super) async fn adhere(
        &self,
        reference: &str,
        req: Request<super::ReqBody>,
        caller: &Caller,
    ) -> Result<Response<Body>, Refusal> {
        let who = self.who(caller)?;
        let r: AdhesionRequest = read_json(req).await?;
        for (what, v) in [
            ("official_name", &r.official_name),
            ("seat", &r.seat),
            ("requested_by", &r.requested_by),
            ("capacity", &r.capacity),
            ("reference", &r.reference),
        ] {
            if v.trim().is_empty() {
                return Err(refuse(Code::RequestInvalid, format!("{what} must not be empty")));
            }
        }
        documents_valid(r.evaluation_form.as_slice())?;
        documents_valid(r.mandate.as_slice())?;
        let org = r.org.unwrap_or(who.kbo);
        let op = "POST /instruments/{reference}/adhesions";
        let mut item = serde_json::Value::Null;
        let (change, _) = self
            .on_instrument(&who, op, reference, |ins, snapshot, now| {
                let kind = snapshot.organisations.iter().find(|o| o.kbo == org).map(|o| o.kind);
                let mut scope = Scope::instrument(ins, None);
                scope.org = Some(org);
                let role = who.require("POST", "/instruments/{reference}/adhesions", &scope, snapshot)?;
                if !ins.takes_adhesions() {
                    return Err(refuse(
                        Code::RequestInvalid,
                        format!(
                            "'{reference}' takes no adhesions; general instruments and access matrices open to \
                             some kinds do"
                        ),
                    ));
                }
                let Some(kind) = kind else {
                    return Err(refuse(Code::ResourceUnknown, format!("organisation {org} is not registered")));
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
                let ended = |a: &Adhesion| matches!(a.state, AdhesionState::Refused | AdhesionState::Withdrawn);
                if ins.adhesions.iter().any(|a| a.org == org && !ended(a)) {
                    return Err(refuse(
                        Code::AlreadyExists,
                        format!("organisation {org} has already asked to adhere to '{reference}'"),
                    ));
                }
                if ins.effective_status() != Status::Active {
                    return Err(refuse(
                        Code::TransitionNotAllowed,
                        format!(
                            "'{reference}' is {}; adhesions are taken while it is active",
                            lifecycle::state_of(ins)
                        ),
                    ));
                }
                // What the request must carry depends on the instrument: a policy rule (422).
                if ins.is_protocol() && r.dpo_advice.as_deref().is_none_or(|a| a.trim().is_empty()) {
                    return Err(refuse(
                        Code::PolicyInvalid,
                        "dpo_advice: an adhesion to a general protocol carries the DPO's advice",
                    ));
                }
                if !ins.is_protocol() && !ins.signed_matrix() && r.evaluation_form.is_none() {
                    return Err(refuse(
                        Code::PolicyInvalid,
                        "evaluation_form: an adhesion request to an authorization carries the evaluation form",
                    ));
                }
                let day = today(now).ok_or_else(|| refuse(Code::Internal, "the gateway's clock is out of range"))?;
                // A refused or withdrawn adhesion of the same organisation gives way to the new
                // request; its history stays in the change log and the audit trail.
                ins.adhesions.retain(|a| a.org != org);
                let adhesion = Adhesion {
                    org,
                    requested_by: r.requested_by.trim().to_owned(),
                    capacity: Some(r.capacity.trim().to_owned()),
                    official_name: Some(r.official_name.trim().to_owned()),
                    seat: Some(r.seat.trim().to_owned()),
                    reference: Some(r.reference.trim().to_owned()),
                    date: day,
                    active_since: None,
                    dpo_advice: r.dpo_advice.clone(),
                    evaluation_form: r.evaluation_form.clone(),
                    mandate: r.mandate.clone(),
                    modalities_confirmed: r.modalities_confirmed,
                    state: AdhesionState::Requested,
                    steps: vec![step("requested", &who, role, now, None, vec![])],
                };
                item = serde_json::json!(adhesion);
                ins.adhesions.push(adhesion);
                Ok((
                    format!("adhesion of {org} requested (reference {}); it opens nothing yet", r.reference.trim()),
                    None,
                ))
            })
            .await?;
        Ok(changed(StatusCode::CREATED, &change, item))
    }

    /// One step of an adhesion's procedure
    /// (`POST /instruments/{reference}/adhesions/{org}/transitions`).
    pub(super) async fn adhesion_step(
        &self,
        reference: &str,
        org: &str,
        req: Request<super::ReqBody>,
        caller: &Caller,
    ) -> Result<Response<Body>, Refusal> {
        let who = self.who(caller)?;
        let org = Kbo::parse(org).map_err(|e| refuse(Code::RequestInvalid, format!("org: {e}")))?;
        let body: StepBody = read_json(req).await?;
        documents_valid(&body.documents)?;
        let reason = body.reason.as_deref().map(str::trim).filter(|r| !r.is_empty()).map(str::to_owned);
        let op = "POST /instruments/{reference}/adhesions/{org}/transitions";
        let mut item = serde_json::Value::Null;
        let (change, _) = self
            .on_instrument(&who, op, reference, |ins, snapshot, now| {
                let mut scope = Scope::instrument(ins, None);
                scope.org = Some(org);
                let role = who.require_step("adhesion", &body.to, &scope, snapshot)?;
                // A usage convention (seed 003) has no examination or onboarding: the user's
                // signature is the request, the data owner's countersignature makes it active.
                let signed = ins.signed_matrix();
                let a = ins.adhesions.iter_mut().find(|a| a.org == org).ok_or_else(|| {
                    refuse(
                        Code::ResourceUnknown,
                        format!("organisation {org} has not asked to adhere to '{reference}'"),
                    )
                })?;
                use AdhesionState::*;
                let to = match body.to.as_str() {
                    "approved" => Approved,
                    "refused" => Refused,
                    "onboarding" => Onboarding,
                    "active" => Active,
                    _ => Withdrawn,
                };
                let possible = policies::lifecycle::adhesion_next(a.state, signed);
                let name = |s: AdhesionState| s.as_str().to_owned();
                if !possible.contains(&to) {
                    let next: Vec<String> = possible.iter().map(|s| name(*s)).collect();
                    let detail = if next.is_empty() {
                        format!("the adhesion is {}: that is final", name(a.state))
                    } else {
                        format!(
                            "cannot go from {} to {}; from {} the possible steps are: {}",
                            name(a.state),
                            body.to,
                            name(a.state),
                            next.join(", ")
                        )
                    };
                    return Err(refuse(Code::TransitionNotAllowed, detail));
                }
                match to {
                    Refused | Withdrawn if reason.is_none() => {
                        return Err(refuse(Code::RequestInvalid, format!("the step to {} needs a reason", body.to)));
                    }
                    Approved if reason.is_none() && body.documents.is_empty() => {
                        return Err(refuse(
                            Code::RequestInvalid,
                            "the examination's decision is given as documents or a reason",
                        ));
                    }
                    Active if signed && body.documents.is_empty() => {
                        return Err(refuse(
                            Code::RequestInvalid,
                            "the usage convention signed by both parties is given as documents",
                        ));
                    }
                    Onboarding if body.documents.is_empty() => {
                        return Err(refuse(Code::RequestInvalid, "the onboarding documentation is given as documents"));
                    }
                    _ => {}
                }
                let from = name(a.state);
                a.state = to;
                if to == Active {
                    a.active_since = today(now);
                }
                a.steps.push(step(&body.to, &who, role, now, reason.clone(), body.documents.clone()));
                item = serde_json::json!(a);
                Ok((format!("adhesion of {org}: {from} → {}", body.to), reason.clone()))
            })
            .await?;
        Ok(changed(StatusCode::OK, &change, item))
    }

    /// Withdraws one end user's role (`POST /roles/withdraw`): by the employer, or by the data
    /// owner of a source whose instruments require the role (seed 003: BOSA deactivates the
    /// rights of one end user).
    pub(super) async fn withdraw_role(
        &self,
        req: Request<super::ReqBody>,
        caller: &Caller,
    ) -> Result<Response<Body>, Refusal> {
        let who = self.who(caller)?;
        let body: RoleWithdrawal = read_json(req).await?;
        let reason = text(Some(&body.reason), "reason")?;
        let mut item = serde_json::Value::Null;
        let (change, _) = self
            .changes
            .apply(&who.actor, "POST /roles/withdraw", |p, now| {
                let snapshot = p.clone();
                // The sources of the instruments that require the role; a data owner acts on
                // those of its own.
                let mut sources: Vec<String> = snapshot
                    .instruments
                    .iter()
                    .filter(|i| i.grants.iter().any(|g| g.end_user_role.as_deref() == Some(body.role.as_str())))
                    .flat_map(|i| i.sources().into_iter().map(str::to_owned).collect::<Vec<_>>())
                    .collect();
                sources.sort();
                sources.dedup();
                let own: Vec<String> = sources
                    .iter()
                    .filter(|s| snapshot.sources.iter().any(|x| x.id == **s && x.owner == who.kbo))
                    .cloned()
                    .collect();
                let scope =
                    Scope { sources: if own.is_empty() { sources } else { own }, org: Some(body.org), authority: None };
                let role = who.require("POST", "/roles/withdraw", &scope, &snapshot)?;
                let r = p
                    .roles
                    .iter_mut()
                    .find(|r| r.org == body.org && r.end_user == body.end_user && r.role == body.role)
                    .ok_or_else(|| refuse(Code::ResourceUnknown, "no such role of an end user of this organisation"))?;
                if r.withdrawn.is_some() {
                    return Err(refuse(Code::TransitionNotAllowed, "the role is already withdrawn"));
                }
                r.withdrawn = Some(step("withdrawn", &who, role, now, Some(reason.clone()), vec![]));
                item = serde_json::json!(r);
                Ok(Edit {
                    target: format!("role {} of an end user of {}", body.role, body.org),
                    summary: format!("withdrawn by the {}", role.as_str()),
                    reason: Some(reason.clone()),
                    instrument: None,
                })
            })
            .await
            .map_err(|e| change_failed(e, None))?;
        Ok(changed(StatusCode::OK, &change, item))
    }

    pub(super) async fn list_dam(&self, caller: &Caller) -> Result<Response<Body>, Refusal> {
        let who = self.allowed(caller, "GET", "/dam-sheets", &Scope::default())?;
        let p = self.changes.handle.model();
        // The sources the caller owns or advises on, as privacy office or ICT office.
        let mut mine = who.own_sources(&p);
        mine.extend(p.sources.iter().filter(|s| s.ict_office() == who.kbo).map(|s| s.id.clone()));
        let now = self.changes.handle.now_ms();
        let items: Vec<serde_json::Value> = p
            .dam_sheets
            .iter()
            .filter(|d| who.sees_all() || d.org == who.kbo || dam_scope(&p, d).sources.iter().any(|s| mine.contains(s)))
            .map(|d| dam_view(d, now))
            .collect();
        Ok(json(
            StatusCode::OK,
            &serde_json::json!({ "version": self.changes.handle.version(), "count": items.len(), "items": items }),
        ))
    }

    /// A DAM sheet as the project team files it: without effect until advised.
    pub(super) async fn add_dam(
        &self,
        req: Request<super::ReqBody>,
        caller: &Caller,
    ) -> Result<Response<Body>, Refusal> {
        let who = self.who(caller)?;
        let r: DamRequest = read_json(req).await?;
        if !policies::model::DAM_ROLES.contains(&r.end_user_role.as_str()) {
            return Err(refuse(
                Code::RequestInvalid,
                format!("end_user_role: a DAM sheet opens access to {} only", policies::model::DAM_ROLES.join(", ")),
            ));
        }
        let now = self.changes.handle.now_ms();
        if today(now).is_some_and(|t| r.valid_until < t) {
            return Err(refuse(Code::RequestInvalid, "valid_until is in the past"));
        }
        let mut sheet = DamSheet {
            id: r.id,
            instrument: r.instrument,
            org: r.org.unwrap_or(who.kbo),
            objectives: r.objectives.trim().to_owned(),
            methodology: r.methodology.trim().to_owned(),
            end_user_role: r.end_user_role,
            access: r.access,
            purposes: r.purposes,
            valid_until: r.valid_until,
            ict_advice: None,
            ssipvp_advice: None,
            advice_date: None,
            remark: None,
            withdrawn: None,
            steps: vec![],
        };
        let mut prefix = String::new();
        let mut item = serde_json::Value::Null;
        let (change, _) = self
            .changes
            .apply(&who.actor, "POST /dam-sheets", |p, now| {
                let role = who.require("POST", "/dam-sheets", &dam_scope(p, &sheet), p)?;
                if p.dam_sheets.iter().any(|d| d.id == sheet.id) {
                    return Err(refuse(Code::AlreadyExists, format!("DAM sheet '{}' already exists", sheet.id)));
                }
                if !p.instruments.iter().any(|i| i.reference == sheet.instrument) {
                    return Err(refuse(Code::ResourceUnknown, format!("no instrument '{}'", sheet.instrument)));
                }
                sheet.steps.push(step("filed", &who, role, now, None, vec![]));
                prefix = format!("dam_sheets[{}].", p.dam_sheets.len());
                item = dam_view(&sheet, now);
                let e = Edit {
                    target: format!("DAM sheet {}", sheet.id),
                    summary: "filed; awaiting ICT's advice".to_owned(),
                    reason: Some(sheet.objectives.clone()),
                    instrument: Some(sheet.instrument.clone()),
                };
                p.dam_sheets.push(sheet);
                Ok(e)
            })
            .await
            .map_err(|e| change_failed(e, Some(&prefix)))?;
        Ok(changed(StatusCode::CREATED, &change, item))
    }

    /// Changes one DAM sheet for a caller holding a role of `path`'s row on it.
    async fn change_dam<F>(&self, id: &str, path: &str, caller: &Caller, edit: F) -> Result<Response<Body>, Refusal>
    where
        F: FnOnce(&mut DamSheet, Role, u64) -> Result<(String, Option<String>), Refusal>,
    {
        let who = self.who(caller)?;
        let op = format!("POST {path}");
        let mut item = serde_json::Value::Null;
        let (change, _) = self
            .changes
            .apply(&who.actor, &op, |p, now| {
                let snapshot = p.clone();
                let d = p
                    .dam_sheets
                    .iter_mut()
                    .find(|d| d.id == id)
                    .ok_or_else(|| refuse(Code::ResourceUnknown, format!("no DAM sheet '{id}'")))?;
                let role = who.require("POST", path, &dam_scope(&snapshot, d), &snapshot)?;
                if d.withdrawn.is_some() {
                    return Err(refuse(Code::TransitionNotAllowed, "the DAM sheet was withdrawn"));
                }
                let (summary, reason) = edit(d, role, now)?;
                item = dam_view(d, now);
                Ok(Edit { target: format!("DAM sheet {id}"), summary, reason, instrument: Some(d.instrument.clone()) })
            })
            .await
            .map_err(|e| change_failed(e, None))?;
        Ok(changed(StatusCode::OK, &change, item))
    }

    /// ICT's advice on a DAM sheet (technical and security aspects), then the privacy office's
    /// (purpose and proportionality, integrating ICT's), which starts the 7 days.
    pub(super) async fn dam_advice(
        &self,
        id: &str,
        ict: bool,
        req: Request<super::ReqBody>,
        caller: &Caller,
    ) -> Result<Response<Body>, Refusal> {
        let who = self.who(caller)?;
        let body: AdviceBody = read_json(req).await?;
        let reference = text(Some(&body.reference), "reference")?;
        documents_valid(&body.documents)?;
        let path = if ict { "/dam-sheets/{id}/ict-advice" } else { "/dam-sheets/{id}/advice" };
        let by = who.kbo;
        self.change_dam(id, path, caller, |d, role, now| {
            let advice = Advice {
                office: if ict { "ict" } else { "ssipvp" }.to_owned(),
                by,
                reference: reference.clone(),
                favourable: body.favourable,
                at: rfc3339(now).unwrap_or_default(),
                documents: body.documents,
            };
            let verdict = if body.favourable { "favourable" } else { "unfavourable" };
            if ict {
                if d.ict_advice.is_some() {
                    return Err(refuse(Code::AlreadyExists, "ICT has already given its advice"));
                }
                d.ict_advice = Some(advice);
                d.steps.push(step("ict-advice", &who, role, now, Some(reference.clone()), vec![]));
                return Ok((format!("{verdict} ICT advice"), Some(reference.clone())));
            }
            if d.ict_advice.is_none() {
                return Err(refuse(
                    Code::TransitionNotAllowed,
                    "the privacy office's advice integrates ICT's, which has not been given yet",
                ));
            }
            if d.ssipvp_advice.is_some() {
                return Err(refuse(Code::AlreadyExists, "the privacy office has already given its advice"));
            }
            let day = today(now).ok_or_else(|| refuse(Code::Internal, "the gateway's clock is out of range"))?;
            d.ssipvp_advice = Some(advice);
            d.advice_date = Some(day);
            d.steps.push(step("advice", &who, role, now, Some(reference.clone()), vec![]));
            let summary = match d.approved_from_day() {
                Some(from) => format!(
                    "{verdict} advice on {day}; authorized tacitly on {} unless remarked",
                    date_of_ms(from.max(0) as u64 * DAY_MS)
                ),
                None => format!("{verdict} advice on {day}: not authorized"),
            };
            Ok((summary, Some(reference.clone())))
        })
        .await
    }

    pub(super) async fn dam_remark(
        &self,
        id: &str,
        req: Request<super::ReqBody>,
        caller: &Caller,
    ) -> Result<Response<Body>, Refusal> {
        let who = self.who(caller)?;
        let body: RemarkBody = read_json(req).await?;
        let remark = text(Some(&body.remark), "remark")?;
        self.change_dam(id, "/dam-sheets/{id}/remark", caller, |d, role, now| {
            if d.remark.is_some() {
                return Err(refuse(Code::AlreadyExists, "a remark was already made; the sheet is refused"));
            }
            let Some(advice) = d.advice_date else {
                return Err(refuse(Code::TransitionNotAllowed, "the 7 days start with the privacy office's advice"));
            };
            if let Some(from) = d.approved_from_day()
                && now >= from.max(0) as u64 * DAY_MS
            {
                return Err(refuse(
                    Code::TransitionNotAllowed,
                    format!(
                        "no remark came within 7 days of the advice of {advice}: the sheet was authorized tacitly on {}; withdraw it instead",
                        date_of_ms(from.max(0) as u64 * DAY_MS)
                    ),
                ));
            }
            d.remark = Some(step("remark", &who, role, now, Some(remark.clone()), vec![]));
            Ok(("remark within 7 days: not authorized".to_owned(), Some(remark.clone())))
        })
        .await
    }

    pub(super) async fn dam_withdraw(
        &self,
        id: &str,
        req: Request<super::ReqBody>,
        caller: &Caller,
    ) -> Result<Response<Body>, Refusal> {
        let who = self.who(caller)?;
        let body: WithdrawBody = read_json(req).await?;
        let reason = text(Some(&body.reason), "reason")?;
        self.change_dam(id, "/dam-sheets/{id}/withdraw", caller, |d, role, now| {
            d.withdrawn = Some(step("withdrawn", &who, role, now, Some(reason.clone()), vec![]));
            Ok(("withdrawn: no longer authorized".to_owned(), Some(reason.clone())))
        })
        .await
    }
}
