//! Who may do what on the control plane: the one role table.
//!
//! Roles are held on sources and instruments, not derived from an organisation's kind: the
//! data owner of a source is the organisation the source names as `owner`, whatever its kind
//! (SPF Finances, a federal authority, owns its access matrix); its privacy office is the
//! organisation the source names as `privacy_office` (the owner's own office when absent); the
//! authority that issues a deliberation is the organisation registered with that authority's
//! code. [`TABLE`] names, for every operation of [`super::routes::ROUTES`], the roles that may
//! perform it; every handler asks [`Who::require`] before it changes or shows anything, and
//! ARCHITECTURE.md carries the same table (a test keeps the three in step).
//!
//! Nobody can raise its own rights: an organisation acting for itself may only *ask* (an
//! adhesion to a general instrument it is eligible for, an exceptional access that stays
//! without effect until the privacy office advises and the data owner lets the 7 days pass)
//! or narrow (its own end users' roles, within what its instruments require). Everything that
//! opens a flow needs the data owner of the source, the issuing authority or the integrator,
//! and nothing opens beyond the source's statutory ceiling (checked by validation and again
//! by `decide()`).

use std::collections::HashSet;

use policies::ids::Kbo;
use policies::model::{ExceptionalAccess, Instrument, InstrumentKind, OrgKind, Policy, Recipient};

use super::refuse;
use crate::error::{Code, Refusal};
use crate::policy::Actor;

/// A role an organisation holds with respect to what a call is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// Any caller with a valid organisation certificate, registered or not.
    Anyone,
    /// Any organisation registered in the policy.
    Registered,
    /// The integrator (an organisation of kind `integrator`).
    Integrator,
    /// The data owner of every source the resource is about.
    DataOwner,
    /// The privacy office (SSIPVP, DPO) of every source the resource is about.
    PrivacyOffice,
    /// The organisation registered with the issuing authority's code (`authority`) of the
    /// deliberation or general instrument concerned.
    IssuingAuthority,
    /// The organisation the resource is about, acting for itself: the adherent, the employer
    /// of the end users, the requester, a recipient of the instrument.
    Itself,
    /// An organisation designated in `control.auditors`.
    Auditor,
    /// An organisation of kind `citizen-access-point`, acting for an authenticated citizen.
    CitizenAccessPoint,
    /// The ICT service of every source the resource is about (the source's `ict_office`, the
    /// data owner's own when absent).
    IctOffice,
    /// The data subject itself, through its own certificate: the enterprise number it
    /// carries, or the vCode registered for that organisation. Need not be registered.
    Subject,
}

impl Role {
    pub const fn as_str(self) -> &'static str {
        match self {
            Role::Anyone => "anyone with a certificate",
            Role::Registered => "registered organisation",
            Role::Integrator => "integrator",
            Role::DataOwner => "data owner",
            Role::PrivacyOffice => "privacy office",
            Role::IssuingAuthority => "issuing authority",
            Role::Itself => "the organisation itself",
            Role::Auditor => "auditor",
            Role::CitizenAccessPoint => "citizen access point",
            Role::IctOffice => "ICT office",
            Role::Subject => "the subject itself",
        }
    }
}

/// One row of the role table.
#[derive(Debug)]
pub struct Rule {
    pub method: &'static str,
    pub path: &'static str,
    /// Any one of these suffices.
    pub roles: &'static [Role],
    /// What the roles are held on, and what else is checked.
    pub note: &'static str,
}

use Role::*;

/// Every control-plane operation and the roles that may perform it.
pub const TABLE: &[Rule] = &[
    Rule { method: "GET", path: "/openapi.json", roles: &[Anyone], note: "the API's description" },
    Rule {
        method: "POST",
        path: "/audit/queries",
        roles: &[Auditor],
        note: "the supervisory bodies of the configuration; with a justification; audited before results",
    },
    Rule {
        method: "GET",
        path: "/audit/report",
        roles: &[CitizenAccessPoint, Subject],
        note: "for the authenticated citizen; an enterprise or association about itself (its enterprise number, its registered vCode); audited",
    },
    Rule {
        method: "GET",
        path: "/audit/requesters",
        roles: &[Registered],
        note: "need to know: the caller's own designations; a data owner's or privacy office's requesters; all for the integrator and auditors",
    },
    Rule {
        method: "POST",
        path: "/audit/requesters",
        roles: &[Integrator, DataOwner, PrivacyOffice],
        note: "of every source of the owner the requester is designated for",
    },
    Rule {
        method: "POST",
        path: "/audit/requesters/{id}/end",
        roles: &[Integrator, DataOwner, PrivacyOffice],
        note: "as the registration",
    },
    Rule {
        method: "GET",
        path: "/audit/requests",
        roles: &[Registered],
        note: "need to know: the requester's own; those about the trail of the sources whose privacy office the caller is",
    },
    Rule {
        method: "POST",
        path: "/audit/requests",
        roles: &[Itself],
        note: "a requester with a designation in force for the owner; the police give the apostille's number; audited",
    },
    Rule {
        method: "GET",
        path: "/audit/requests/{id}",
        roles: &[Itself, PrivacyOffice],
        note: "the requester; the privacy office of the owner's sources",
    },
    Rule {
        method: "POST",
        path: "/audit/requests/{id}/advice",
        roles: &[PrivacyOffice],
        note: "privacy office of every source of the owner, never the requester itself; once; a favourable advice fixes what the inquiry reads",
    },
    Rule {
        method: "GET",
        path: "/audit/requests/{id}/results",
        roles: &[Itself, PrivacyOffice],
        note: "after a favourable advice: the requester, or the privacy office passing the result on; paged; audited",
    },
    Rule {
        method: "GET",
        path: "/consents",
        roles: &[CitizenAccessPoint, Integrator],
        note: "one subject's consents, with their re-validation due date",
    },
    Rule {
        method: "GET",
        path: "/consents/due",
        roles: &[DataOwner, Integrator],
        note: "the consents of one source whose re-validation is due, under the source's rule; audited",
    },
    Rule {
        method: "POST",
        path: "/consents/{id}/invite",
        roles: &[DataOwner, Integrator],
        note: "data owner of the consent's source: records that the citizen was invited to re-validate",
    },
    Rule {
        method: "POST",
        path: "/consents",
        roles: &[CitizenAccessPoint, Integrator],
        note: "for a consent-based flow",
    },
    Rule { method: "POST", path: "/consents/{id}/revoke", roles: &[CitizenAccessPoint, Integrator], note: "" },
    Rule { method: "POST", path: "/consents/{id}/revalidate", roles: &[CitizenAccessPoint, Integrator], note: "" },
    Rule { method: "GET", path: "/organisations", roles: &[Registered], note: "public-sector register: all" },
    Rule { method: "POST", path: "/organisations", roles: &[Integrator], note: "onboarding" },
    Rule {
        method: "POST",
        path: "/organisations/{kbo}/certificates",
        roles: &[Integrator, Itself],
        note: "a registered organisation's request signed by the gateway's own CA (control.issuer): by the integrator at onboarding, by the organisation itself for another; a certificate another CA issued: registered by the integrator only; a pinned organisation is identified by these only; audited",
    },
    Rule { method: "GET", path: "/sources", roles: &[Registered], note: "the catalogue: all" },
    Rule {
        method: "POST",
        path: "/sources",
        roles: &[Integrator, DataOwner],
        note: "a data owner registers its own sources (owner = caller) and their consents' re-validation; only the integrator declares a privacy office, an ICT office or a statutory ceiling",
    },
    Rule { method: "GET", path: "/services", roles: &[Registered], note: "the catalogue: all" },
    Rule { method: "POST", path: "/services", roles: &[Integrator, DataOwner], note: "of the service's source" },
    Rule {
        method: "GET",
        path: "/instruments",
        roles: &[Registered],
        note: "need to know: all for the integrator and auditors; otherwise those about the caller's sources, issued by it, or naming it as recipient",
    },
    Rule {
        method: "POST",
        path: "/instruments",
        roles: &[Integrator, DataOwner, IssuingAuthority],
        note: "data owner of every source the instrument is about; issuing authority for its deliberations; protocols start as draft; within the ceilings",
    },
    Rule {
        method: "GET",
        path: "/instruments/{reference}",
        roles: &[Integrator, Auditor, DataOwner, PrivacyOffice, IssuingAuthority, Itself],
        note: "need to know, as the listing",
    },
    Rule {
        method: "POST",
        path: "/instruments/{reference}/transitions",
        roles: &[Integrator, DataOwner, IssuingAuthority, Itself],
        note: "each step as the procedure table says; a child never more in force than its parent",
    },
    Rule {
        method: "POST",
        path: "/instruments/{reference}/advice",
        roles: &[PrivacyOffice],
        note: "the DPO (privacy office) of the protocol's sources; a protocol enters into force only after a favourable one",
    },
    Rule {
        method: "POST",
        path: "/instruments/{reference}/adhesions",
        roles: &[Itself, DataOwner, Integrator],
        note: "the request, by the adherent itself if of an eligible kind, or the data owner recording it; it opens nothing until active",
    },
    Rule {
        method: "POST",
        path: "/instruments/{reference}/adhesions/{org}/transitions",
        roles: &[IssuingAuthority, DataOwner, Itself, Integrator],
        note: "each step as the procedure table says",
    },
    Rule {
        method: "GET",
        path: "/roles",
        roles: &[Registered],
        note: "need to know: the caller's own end users; for a data owner, the roles its instruments require",
    },
    Rule {
        method: "POST",
        path: "/roles",
        roles: &[Itself, Integrator],
        note: "an organisation's own end users; never longer than the role validity the matrices requiring it allow",
    },
    Rule {
        method: "POST",
        path: "/roles/withdraw",
        roles: &[Itself, DataOwner, Integrator],
        note: "the employer, or the data owner of every source of the instruments requiring the role; with a reason",
    },
    Rule {
        method: "GET",
        path: "/exceptional-accesses",
        roles: &[Registered],
        note: "need to know: the requester's own; those on the matrices of the caller's sources",
    },
    Rule {
        method: "POST",
        path: "/exceptional-accesses",
        roles: &[Itself, Integrator],
        note: "a request for the caller's own end user; no date: it has no effect until advised",
    },
    Rule {
        method: "POST",
        path: "/exceptional-accesses/{id}/advice",
        roles: &[PrivacyOffice],
        note: "privacy office of the matrix's source; the gateway's clock stamps the advice, which starts the 7 days",
    },
    Rule {
        method: "POST",
        path: "/exceptional-accesses/{id}/remark",
        roles: &[DataOwner],
        note: "data owner of the matrix's source, within 7 days of the advice",
    },
    Rule {
        method: "POST",
        path: "/exceptional-accesses/{id}/withdraw",
        roles: &[DataOwner, Itself, Integrator],
        note: "at any time: the data owner, the requester, or the integrator",
    },
    Rule {
        method: "GET",
        path: "/dam-sheets",
        roles: &[Registered],
        note: "need to know: the requester's own; those on the matrices of the sources the caller owns or advises on",
    },
    Rule {
        method: "POST",
        path: "/dam-sheets",
        roles: &[Itself],
        note: "the project team's organisation, for its own data analysts or data managers; no effect until advised",
    },
    Rule {
        method: "POST",
        path: "/dam-sheets/{id}/ict-advice",
        roles: &[IctOffice],
        note: "ICT office of the sheet's sources: technical and security aspects; once",
    },
    Rule {
        method: "POST",
        path: "/dam-sheets/{id}/advice",
        roles: &[PrivacyOffice],
        note: "privacy office (SSIPVP) of the sheet's sources, after ICT's advice; starts the 7 days",
    },
    Rule {
        method: "POST",
        path: "/dam-sheets/{id}/remark",
        roles: &[DataOwner],
        note: "data owner of the sheet's sources, within 7 days of the advice",
    },
    Rule {
        method: "POST",
        path: "/dam-sheets/{id}/withdraw",
        roles: &[DataOwner, Itself, Integrator],
        note: "at any time",
    },
    Rule {
        method: "GET",
        path: "/changes",
        roles: &[Integrator, Auditor, DataOwner],
        note: "data owner of at least one source",
    },
    Rule { method: "GET", path: "/policy/export", roles: &[Integrator], note: "" },
    Rule {
        method: "POST",
        path: "/policy/import",
        roles: &[Integrator],
        note: "never empty; must leave an integrator and the importer's own role; `?dry_run=true` shows the difference",
    },
    Rule { method: "POST", path: "/reload", roles: &[Integrator], note: "" },
    Rule {
        method: "GET",
        path: "/activity",
        roles: &[Integrator],
        note: "the data plane's last hour from the metrics: calls, refusals by code, p99 per service; readiness now",
    },
];

/// One step of a procedure and the roles that may take it: the second half of the role table.
/// `POST /instruments/{reference}/transitions` and
/// `POST /instruments/{reference}/adhesions/{org}/transitions` look the step up here.
#[derive(Debug)]
pub struct StepRule {
    /// `convention`, `instrument` (every other kind) or `adhesion`.
    pub procedure: &'static str,
    /// The state the step reaches.
    pub to: &'static str,
    pub roles: &'static [Role],
    /// What the step must carry, and what else is checked.
    pub evidence: &'static str,
}

/// Every step of the procedures the control plane drives.
pub const STEPS: &[StepRule] = &[
    StepRule {
        procedure: "convention",
        to: "deliberation-received",
        roles: &[DataOwner],
        evidence: "the deliberation it rests on is registered and active (seed 000 §2)",
    },
    StepRule {
        procedure: "convention",
        to: "convention-sent",
        roles: &[DataOwner],
        evidence: "`text_version` of the standard convention and `layout_version` of the imposed layout (§3)",
    },
    StepRule {
        procedure: "convention",
        to: "signed-by-beneficiary",
        roles: &[Itself],
        evidence: "the beneficiary's `signatory` (name, capacity) and its `contact` form (§3, §4)",
    },
    StepRule {
        procedure: "convention",
        to: "test-phase",
        roles: &[DataOwner],
        evidence: "the data owner's IT department starts the test flows (§4)",
    },
    StepRule {
        procedure: "convention",
        to: "active",
        roles: &[DataOwner, Integrator],
        evidence: "from the test phase: the data owner's countersignature `signatory` (§4); from a suspension: lifts it",
    },
    StepRule {
        procedure: "convention",
        to: "published",
        roles: &[DataOwner],
        evidence: "the publication shows it from now on (§5)",
    },
    StepRule { procedure: "convention", to: "suspended", roles: &[DataOwner, Integrator], evidence: "a `reason`" },
    StepRule { procedure: "convention", to: "terminated", roles: &[DataOwner, Integrator], evidence: "a `reason`" },
    StepRule {
        procedure: "instrument",
        to: "test",
        roles: &[DataOwner, IssuingAuthority, Integrator],
        evidence: "a protocol: a favourable DPO advice first",
    },
    StepRule {
        procedure: "instrument",
        to: "active",
        roles: &[DataOwner, IssuingAuthority, Integrator],
        evidence: "a protocol: a favourable DPO advice first",
    },
    StepRule {
        procedure: "instrument",
        to: "suspended",
        roles: &[DataOwner, IssuingAuthority, Integrator],
        evidence: "a `reason`",
    },
    StepRule {
        procedure: "instrument",
        to: "expired",
        roles: &[DataOwner, IssuingAuthority, Integrator],
        evidence: "a `reason`",
    },
    StepRule {
        procedure: "instrument",
        to: "revoked",
        roles: &[DataOwner, IssuingAuthority, Integrator],
        evidence: "a `reason`",
    },
    StepRule {
        procedure: "adhesion",
        to: "approved",
        roles: &[IssuingAuthority, DataOwner],
        evidence: "the examination's decision as `documents` or a `reason` (seed 001 §3)",
    },
    StepRule { procedure: "adhesion", to: "refused", roles: &[IssuingAuthority, DataOwner], evidence: "a `reason`" },
    StepRule {
        procedure: "adhesion",
        to: "onboarding",
        roles: &[Itself],
        evidence: "the onboarding documentation as `documents` (§4)",
    },
    StepRule {
        procedure: "adhesion",
        to: "active",
        roles: &[DataOwner],
        evidence: "the data owner confirms the onboarding (a usage convention, seed 003: its countersignature, as `documents`); the publication lists a general instrument's adherent from this day",
    },
    StepRule {
        procedure: "adhesion",
        to: "withdrawn",
        roles: &[Itself, DataOwner, IssuingAuthority, Integrator],
        evidence: "a `reason`",
    },
];

/// The row of the step reaching `to` in `procedure`.
pub fn step_rule(procedure: &str, to: &str) -> Option<&'static StepRule> {
    STEPS.iter().find(|r| r.procedure == procedure && r.to == to)
}

/// The row of `method path` (a template of the route table).
pub fn rule(method: &str, path: &str) -> Option<&'static Rule> {
    TABLE.iter().find(|r| r.method == method && r.path == path)
}

/// What a call is about: the roles are held with respect to it.
#[derive(Debug, Default, Clone)]
pub struct Scope {
    /// The sources concerned; the data owner and privacy office roles need all of them.
    pub sources: Vec<String>,
    /// The organisation the resource belongs to (adherent, employer, requester, recipient).
    pub org: Option<Kbo>,
    /// The issuing authority's code, for a deliberation or a general instrument.
    pub authority: Option<String>,
}

impl Scope {
    /// An instrument: its sources, its issuing authority, and the caller when it is a
    /// recipient of the instrument.
    pub fn instrument(ins: &Instrument, caller: Option<(Kbo, OrgKind)>) -> Self {
        let issued = matches!(ins.kind, InstrumentKind::Deliberation | InstrumentKind::General);
        Scope {
            sources: ins.sources().into_iter().map(str::to_owned).collect(),
            org: caller.filter(|&(kbo, kind)| names(ins, kbo, kind)).map(|(kbo, _)| kbo),
            authority: ins.authority.clone().filter(|_| issued),
        }
    }

    /// An exceptional access: the sources of its matrix (and of its service), its requester.
    pub fn exceptional(policy: &Policy, x: &ExceptionalAccess) -> Self {
        Self::on_matrix(policy, &x.instrument, [x.service.as_str()], x.org)
    }

    /// A request on an access matrix (an exceptional access, a DAM sheet): the matrix's
    /// sources and those of the `services` it asks for, and the requesting organisation.
    pub fn on_matrix<'s>(policy: &Policy, matrix: &str, services: impl IntoIterator<Item = &'s str>, org: Kbo) -> Self {
        let mut sources: Vec<String> = policy
            .instruments
            .iter()
            .find(|i| i.reference == matrix)
            .map(|i| i.sources().into_iter().map(str::to_owned).collect())
            .unwrap_or_default();
        for service in services {
            if let Some(s) = policy.services.iter().find(|s| s.id == service)
                && !sources.contains(&s.source)
            {
                sources.push(s.source.clone());
            }
        }
        Scope { sources, org: Some(org), authority: None }
    }

    pub fn sources(sources: impl IntoIterator<Item = String>) -> Self {
        Scope { sources: sources.into_iter().collect(), ..Scope::default() }
    }

    pub fn org(org: Kbo) -> Self {
        Scope { org: Some(org), ..Scope::default() }
    }
}

/// Whether `ins` names the organisation as a recipient (directly, by kind, or as an eligible
/// or actual adherent).
fn names(ins: &Instrument, kbo: Kbo, kind: OrgKind) -> bool {
    ins.eligible.contains(&kind)
        || ins.adhesions.iter().any(|a| a.org == kbo)
        || ins.grants.iter().any(|g| match &g.recipient {
            Recipient::Org(k) => *k == kbo,
            Recipient::Kind(k) => *k == kind,
            Recipient::Adherents(_) => ins.eligible.contains(&kind),
        })
}

/// The calling organisation, as the policy and the configuration know it.
#[derive(Debug)]
pub struct Who {
    pub kbo: Kbo,
    pub kind: Option<OrgKind>,
    pub actor: Actor,
    pub auditor: bool,
}

impl Who {
    pub fn is_integrator(&self) -> bool {
        self.kind == Some(OrgKind::Integrator)
    }

    /// The organisation and kind, for a registered caller.
    pub fn registered(&self) -> Option<(Kbo, OrgKind)> {
        self.kind.map(|k| (self.kbo, k))
    }

    /// Whether the caller holds `role` with respect to `scope` under `policy`.
    pub fn holds(&self, role: Role, scope: &Scope, policy: &Policy) -> bool {
        let all_sources = |office: bool| {
            !scope.sources.is_empty()
                && scope.sources.iter().all(|s| {
                    policy
                        .sources
                        .iter()
                        .find(|x| x.id == *s)
                        .is_some_and(|x| if office { x.privacy_office() == self.kbo } else { x.owner == self.kbo })
                })
        };
        match role {
            Anyone => true,
            Registered => self.kind.is_some(),
            Integrator => self.is_integrator(),
            DataOwner => all_sources(false),
            PrivacyOffice => all_sources(true),
            IssuingAuthority => scope.authority.as_deref().is_some_and(|code| {
                policy.organisations.iter().any(|o| o.kbo == self.kbo && o.authority.as_deref() == Some(code))
            }),
            Itself => self.kind.is_some() && scope.org == Some(self.kbo),
            Auditor => self.auditor,
            CitizenAccessPoint => self.kind == Some(OrgKind::CitizenAccessPoint),
            IctOffice => {
                !scope.sources.is_empty()
                    && scope
                        .sources
                        .iter()
                        .all(|s| policy.sources.iter().find(|x| x.id == *s).is_some_and(|x| x.ict_office() == self.kbo))
            }
            Subject => scope.org == Some(self.kbo),
        }
    }

    /// The first role of the step reaching `to` in `procedure` that the caller holds on
    /// `scope`, or the refusal naming the roles the step needs.
    pub fn require_step(&self, procedure: &str, to: &str, scope: &Scope, policy: &Policy) -> Result<Role, Refusal> {
        let Some(rule) = step_rule(procedure, to) else {
            let known: Vec<&str> = STEPS.iter().filter(|r| r.procedure == procedure).map(|r| r.to).collect();
            return Err(refuse(
                Code::RequestInvalid,
                format!("'{to}' is not a step of the {procedure} procedure; its steps are: {}", known.join(", ")),
            ));
        };
        if let Some(&role) = rule.roles.iter().find(|&&r| self.holds(r, scope, policy)) {
            return Ok(role);
        }
        let needs: Vec<String> = rule.roles.iter().map(|r| describe(*r, scope, policy)).collect();
        Err(refuse(Code::AdminRoleMissing, format!("the {procedure} step to {to} needs one of: {}", needs.join("; "))))
    }

    /// The first role of `method path`'s row that the caller holds on `scope`, or the
    /// refusal naming the roles it would need and on what.
    pub fn require(&self, method: &str, path: &str, scope: &Scope, policy: &Policy) -> Result<Role, Refusal> {
        let Some(rule) = rule(method, path) else {
            return Err(refuse(Code::Internal, "an operation missing from the role table"));
        };
        if let Some(&role) = rule.roles.iter().find(|&&r| self.holds(r, scope, policy)) {
            return Ok(role);
        }
        if self.kind.is_none() && !rule.roles.iter().any(|r| matches!(r, Anyone | Auditor | Subject)) {
            return Err(refuse(Code::AdminRoleMissing, "the certificate's organisation is not registered"));
        }
        let needs: Vec<String> = rule.roles.iter().map(|r| describe(*r, scope, policy)).collect();
        Err(refuse(Code::AdminRoleMissing, format!("{method} {path} needs one of: {}", needs.join("; "))))
    }

    /// The sources whose data owner or privacy office the caller is.
    pub fn own_sources(&self, policy: &Policy) -> HashSet<String> {
        policy
            .sources
            .iter()
            .filter(|s| s.owner == self.kbo || s.privacy_office() == self.kbo)
            .map(|s| s.id.clone())
            .collect()
    }

    /// Whether the caller sees everything (need to know does not narrow it).
    pub fn sees_all(&self) -> bool {
        self.is_integrator() || self.auditor
    }
}

/// A role, with what it is held on, for a refusal.
fn describe(role: Role, scope: &Scope, policy: &Policy) -> String {
    let on = |office: bool| {
        let v: Vec<String> = scope
            .sources
            .iter()
            .map(|s| match policy.sources.iter().find(|x| x.id == *s) {
                Some(x) => format!("{s} ({})", if office { x.privacy_office() } else { x.owner }),
                None => format!("{s} (unknown source)"),
            })
            .collect();
        if v.is_empty() { "no source named".to_owned() } else { v.join(", ") }
    };
    match role {
        DataOwner => format!("the data owner of {}", on(false)),
        PrivacyOffice => format!("the privacy office of {}", on(true)),
        IctOffice => format!("the ICT office of the sources {}", scope.sources.join(", ")),
        IssuingAuthority => match &scope.authority {
            Some(a) => format!("the issuing authority {a}"),
            None => "an issuing authority (the instrument names none)".to_owned(),
        },
        Itself => match scope.org {
            Some(o) => format!("organisation {o} itself"),
            None => "the organisation concerned itself".to_owned(),
        },
        r => format!("the {}", r.as_str()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_table_covers_every_route_once() {
        for (m, p) in super::super::routes::ROUTES {
            let n = TABLE.iter().filter(|r| r.method == *m && r.path == *p).count();
            assert_eq!(n, 1, "{m} {p} has {n} row(s) in the role table");
        }
        assert_eq!(TABLE.len(), super::super::routes::ROUTES.len(), "a row for a route that does not exist");
    }

    /// ARCHITECTURE.md carries the same table: every operation with exactly its roles.
    #[test]
    fn architecture_md_carries_the_table() {
        let doc = include_str!("../../../ARCHITECTURE.md");
        for r in TABLE {
            let op = format!("| `{} {}` |", r.method, r.path);
            let Some(line) = doc.lines().find(|l| l.starts_with(&op)) else {
                panic!("ARCHITECTURE.md's role table has no row {op}");
            };
            let roles: Vec<&str> = r.roles.iter().map(|r| r.as_str()).collect();
            let cell = line[op.len()..].split('|').next().unwrap_or_default().trim();
            assert_eq!(cell, roles.join(", "), "ARCHITECTURE.md, {op}");
        }
        for r in STEPS {
            let op = format!("| {} | `{}` |", r.procedure, r.to);
            let Some(line) = doc.lines().find(|l| l.starts_with(&op)) else {
                panic!("ARCHITECTURE.md's procedure table has no row {op}");
            };
            let roles: Vec<&str> = r.roles.iter().map(|r| r.as_str()).collect();
            let cell = line[op.len()..].split('|').next().unwrap_or_default().trim();
            assert_eq!(cell, roles.join(", "), "ARCHITECTURE.md, {op}");
        }
    }
}
