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
        roles: &[CitizenAccessPoint],
        note: "for the authenticated citizen; audited",
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
    Rule { method: "GET", path: "/consents", roles: &[CitizenAccessPoint, Integrator], note: "one subject's consents" },
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
    Rule { method: "GET", path: "/sources", roles: &[Registered], note: "the catalogue: all" },
    Rule {
        method: "POST",
        path: "/sources",
        roles: &[Integrator, DataOwner],
        note: "a data owner registers its own sources (owner = caller); only the integrator declares a privacy office or a statutory ceiling",
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
        roles: &[Integrator, DataOwner, IssuingAuthority],
        note: "data owner of its sources (suspends, resumes, follows the procedure); a child never more in force than its parent",
    },
    Rule {
        method: "POST",
        path: "/instruments/{reference}/adhesions",
        roles: &[Itself, DataOwner, Integrator],
        note: "the adherent itself, if of an eligible kind, or the data owner recording it",
    },
    Rule {
        method: "GET",
        path: "/roles",
        roles: &[Registered],
        note: "need to know: the caller's own end users; for a data owner, the roles its instruments require",
    },
    Rule { method: "POST", path: "/roles", roles: &[Itself, Integrator], note: "an organisation's own end users" },
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
];

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
        let mut sources: Vec<String> = policy
            .instruments
            .iter()
            .find(|i| i.reference == x.instrument)
            .map(|i| i.sources().into_iter().map(str::to_owned).collect())
            .unwrap_or_default();
        if let Some(s) = policy.services.iter().find(|s| s.id == x.service)
            && !sources.contains(&s.source)
        {
            sources.push(s.source.clone());
        }
        Scope { sources, org: Some(x.org), authority: None }
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
        }
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
        if self.kind.is_none() && !rule.roles.iter().any(|r| matches!(r, Anyone | Auditor)) {
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
    }
}
