//! `decide()`: may this caller make this call, on this legal basis, for this purpose, now?
//!
//! Shaped like Cedar's authorizer: a request of principal (caller, end user) / action (service,
//! purpose) / resource (the named instrument) / context (environment, time); deny by default;
//! the answer names the grant and instrument that decided, for the audit record.
//!
//! Allocation-free: the query borrows its strings, the snapshot is read through hash lookups of
//! `&str` and integer comparisons, and the decision is a small `Copy` value. A test with a
//! counting global allocator (`tests/alloc.rs`) holds this to 0 allocations on every path.

use crate::compiled::{
    Entry, FieldMask, GrantId, InstrumentId, MAX_DEPTH, OrgId, PurposeId, ServiceId, Snapshot, env_bit, key, kind_bit,
};
use crate::conditions::Unmet;
use crate::ids::Kbo;
use crate::model::Env;

/// One request to decide. Everything is borrowed; `now` is Unix seconds (injectable).
#[derive(Debug, Clone, Copy)]
pub struct Query<'a> {
    pub caller: Kbo,
    pub service: &'a str,
    /// The `X-Legal-Basis` reference: the instrument named is the one checked.
    pub legal_basis: &'a str,
    pub purpose: &'a str,
    pub end_user: Option<&'a str>,
    pub environment: Env,
    pub now: i64,
    /// The SHA-256 fingerprint of the caller's certificate, for grants that name applications.
    pub certificate: Option<&'a [u8; 32]>,
    /// The address the call comes from, for grants that name network zones.
    pub peer: Option<std::net::IpAddr>,
}

/// The stable refusal codes a decision can produce (a subset of the gateway's codes).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DenyCode {
    NoLegalBasis,
    LegalBasisNotApplicable,
    AdhesionMissing,
    PurposeNotAllowed,
    InstrumentNotActive,
    FlowSuspended,
    EndUserRoleMissing,
    /// The grant's "where" or "when" does not hold for this call.
    ConditionNotMet,
    /// The organisation is pinned to certificates of which this is none.
    CertificateNotPinned,
}

/// Why, more precisely; each has a fixed message for the caller.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reason {
    UnknownCaller,
    UnknownService,
    UnknownInstrument,
    NotCovered,
    NotAdhered,
    Draft,
    Revoked,
    Expired,
    NotYetValid,
    TestPhaseOnly,
    Suspended,
    EnvironmentNotOpen,
    GrantExpired,
    GrantNotYetValid,
    PurposeNotGranted,
    EndUserMissing,
    RoleMissing,
    RoleExpired,
    RoleNotYetValid,
    NotTheNamedEndUser,
    /// An instrument this one rests on is suspended (named in [`Deny::parent`]).
    ParentSuspended,
    /// An instrument this one rests on is not in force (named in [`Deny::parent`]).
    ParentNotActive,
    /// A deliberation now in force replaced this protocol (named in [`Deny::parent`]).
    Replaced,
    /// The source's statutory ceiling does not allow this kind of recipient.
    CeilingRecipient,
    /// The source's statutory ceiling does not allow this purpose.
    CeilingPurpose,
    /// The grant opens calls from other applications or network zones only.
    OriginNotAllowed,
    /// The grant opens calls at other times only.
    OutsideWindow,
    /// The organisation accepts only the certificates pinned for it.
    CertificateNotPinned,
}

impl Reason {
    pub const fn message(self) -> &'static str {
        match self {
            Reason::UnknownCaller => "the calling organisation is not registered with any instrument",
            Reason::UnknownService => "no instrument covers this service",
            Reason::UnknownInstrument => "no instrument has the reference named in X-Legal-Basis",
            Reason::NotCovered => "the instrument named does not cover this organisation for this service",
            Reason::NotAdhered => "the organisation has not adhered to this general instrument",
            Reason::Draft => "the instrument is not in force yet (draft)",
            Reason::Revoked => "the instrument has been revoked or terminated",
            Reason::Expired => "the instrument has expired",
            Reason::NotYetValid => "the instrument is not valid yet",
            Reason::TestPhaseOnly => "the instrument is in its test phase: only the test environment answers",
            Reason::Suspended => "the flow is suspended by its data owner",
            Reason::EnvironmentNotOpen => "the grant does not open this environment",
            Reason::GrantExpired => "the grant has expired",
            Reason::GrantNotYetValid => "the grant is not valid yet",
            Reason::PurposeNotGranted => "the purpose named in X-Purpose is not granted by this instrument",
            Reason::EndUserMissing => "the grant requires the end user in X-End-User",
            Reason::RoleMissing => "the end user does not hold the role the grant requires",
            Reason::RoleExpired => "the end user's role has expired and must be renewed",
            Reason::RoleNotYetValid => "the end user's role is not valid yet",
            Reason::NotTheNamedEndUser => "this exceptional access is open to another end user only",
            Reason::ParentSuspended => "the instrument this one rests on is suspended",
            Reason::ParentNotActive => "the instrument this one rests on is not in force",
            Reason::Replaced => "this protocol was replaced by a deliberation now in force",
            Reason::CeilingRecipient => "the law that governs this source does not allow this kind of recipient",
            Reason::CeilingPurpose => "the law that governs this source does not allow this purpose",
            Reason::OriginNotAllowed => {
                "the grant opens calls from other applications or network zones only (its \"where\")"
            }
            Reason::OutsideWindow => "the grant opens calls at other times only (its \"when\", Belgian time)",
            Reason::CertificateNotPinned => {
                "the organisation accepts only the certificates registered for it, and this is none of them"
            }
        }
    }
}

/// A rate-limit bucket: one per (grant, caller).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RateKey {
    pub grant: GrantId,
    pub org: OrgId,
    pub max: u32,
    pub period_secs: u32,
}

/// A permitted call.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Permit {
    pub grant: GrantId,
    pub instrument: InstrumentId,
    pub service: ServiceId,
    pub purpose: PurposeId,
    /// The fields the answer may carry.
    pub fields: FieldMask,
    pub consent_required: bool,
    pub rate: Option<RateKey>,
}

/// A refused call.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Deny {
    pub code: DenyCode,
    pub reason: Reason,
    /// The instrument concerned, when one was found (its suspension reason, for instance).
    pub instrument: Option<InstrumentId>,
    /// The grant that came closest, when one was found.
    pub grant: Option<GrantId>,
    /// The other instrument behind the refusal: the parent that is not in force, or the
    /// deliberation that replaced the instrument named.
    pub parent: Option<InstrumentId>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    Permit(Permit),
    Deny(Deny),
}

impl Decision {
    pub fn is_permit(&self) -> bool {
        matches!(self, Decision::Permit(_))
    }
}

const fn deny(code: DenyCode, reason: Reason) -> Decision {
    Decision::Deny(Deny { code, reason, instrument: None, grant: None, parent: None })
}

impl Snapshot {
    /// Decides one query. Deny by default; never allocates.
    pub fn decide(&self, q: &Query<'_>) -> Decision {
        let Some(&org) = self.orgs.get(&q.caller.as_u64()) else {
            return deny(DenyCode::NoLegalBasis, Reason::UnknownCaller);
        };
        if !self.org_info[org as usize].accepts(q.certificate) {
            return deny(DenyCode::CertificateNotPinned, Reason::CertificateNotPinned);
        }
        let Some(&service) = self.services.get(q.service) else {
            return deny(DenyCode::NoLegalBasis, Reason::UnknownService);
        };
        let Some(&instrument) = self.instruments.get(q.legal_basis) else {
            return deny(DenyCode::NoLegalBasis, Reason::UnknownInstrument);
        };
        let purpose = self.purposes.get(q.purpose).copied();
        // The source's statutory ceiling binds every instrument.
        let ceiling = self.service_info[service as usize].ceiling.as_ref();
        if let Some(c) = ceiling
            && c.kinds != 0
            && c.kinds & kind_bit(self.org_info[org as usize].kind) == 0
        {
            return Decision::Deny(Deny {
                code: DenyCode::LegalBasisNotApplicable,
                reason: Reason::CeilingRecipient,
                instrument: Some(InstrumentId(instrument)),
                grant: None,
                parent: None,
            });
        }
        let entries: &[Entry] = match self.index.get(&key(org, service)) {
            Some(&(start, len)) => &self.entries[start as usize..(start + len) as usize],
            None => &[],
        };
        let ins_id = Some(InstrumentId(instrument));
        // The refusal of the grant that got furthest through the checks.
        let mut best: Option<(u8, Deny)> = None;
        let mut note = |stage: u8, code: DenyCode, reason: Reason, grant: u32| {
            if best.is_none_or(|(s, _)| stage > s) {
                best =
                    Some((stage, Deny { code, reason, instrument: ins_id, grant: Some(GrantId(grant)), parent: None }));
            }
        };
        for e in entries {
            let g = &self.grants[e.grant as usize];
            if g.instrument != instrument {
                continue;
            }
            if !e.adhered {
                note(0, DenyCode::AdhesionMissing, Reason::NotAdhered, e.grant);
                continue;
            }
            // The instrument covers this caller and service: its own state decides first, then
            // that of every instrument it rests on, then whether a deliberation replaced it.
            if let Err(d) = self.in_force(instrument, q.environment, q.now) {
                return Decision::Deny(d);
            }
            // Purpose first: a grant for the right purpose that fails a later check is the
            // closer one, and its refusal is the more useful answer.
            let granted = &self.purpose_pool[g.purposes.0 as usize..(g.purposes.0 + g.purposes.1) as usize];
            let Some(purpose) = purpose.filter(|p| granted.contains(p)) else {
                note(1, DenyCode::PurposeNotAllowed, Reason::PurposeNotGranted, e.grant);
                continue;
            };
            if let Some(allowed) = ceiling.and_then(|c| c.purposes.as_deref())
                && !allowed.contains(&purpose)
            {
                note(1, DenyCode::PurposeNotAllowed, Reason::CeilingPurpose, e.grant);
                continue;
            }
            if g.envs & env_bit(q.environment) == 0 {
                note(2, DenyCode::InstrumentNotActive, Reason::EnvironmentNotOpen, e.grant);
                continue;
            }
            if q.now < g.from {
                note(3, DenyCode::InstrumentNotActive, Reason::GrantNotYetValid, e.grant);
                continue;
            }
            if q.now >= g.until {
                note(3, DenyCode::InstrumentNotActive, Reason::GrantExpired, e.grant);
                continue;
            }
            if let Some(named) = &g.end_user
                && q.end_user != Some(&**named)
            {
                note(4, DenyCode::EndUserRoleMissing, Reason::NotTheNamedEndUser, e.grant);
                continue;
            }
            if let Some(role) = g.role
                && let Err(reason) = self.check_role(org, q.end_user, role, q.now)
            {
                note(4, DenyCode::EndUserRoleMissing, reason, e.grant);
                continue;
            }
            if let Some(c) = &g.conditions
                && let Err(unmet) = c.check(q.certificate, q.peer, q.now)
            {
                let reason = match unmet {
                    Unmet::Origin => Reason::OriginNotAllowed,
                    Unmet::Time => Reason::OutsideWindow,
                };
                note(5, DenyCode::ConditionNotMet, reason, e.grant);
                continue;
            }
            return Decision::Permit(Permit {
                grant: GrantId(e.grant),
                instrument: InstrumentId(instrument),
                service: ServiceId(service),
                purpose: PurposeId(purpose),
                fields: match ceiling {
                    Some(c) => FieldMask(g.fields.0 & c.fields.0),
                    None => g.fields,
                },
                consent_required: g.consent || ceiling.is_some_and(|c| c.consent),
                rate: g.rate.map(|r| RateKey {
                    grant: GrantId(e.grant),
                    org: OrgId(org),
                    max: r.max,
                    period_secs: r.per.seconds(),
                }),
            });
        }
        match best {
            Some((_, d)) => Decision::Deny(d),
            None => Decision::Deny(Deny {
                code: DenyCode::LegalBasisNotApplicable,
                reason: Reason::NotCovered,
                instrument: ins_id,
                grant: None,
                parent: None,
            }),
        }
    }

    /// Whether `instrument` is in force for `env` at `now`: its own status and window, then
    /// [`Self::chain_in_force`].
    fn in_force(&self, instrument: u32, env: Env, now: i64) -> Result<(), Deny> {
        let own = self.instrument_info[instrument as usize].in_force(env, now);
        own.map_err(|(code, reason)| Deny {
            code,
            reason,
            instrument: Some(InstrumentId(instrument)),
            grant: None,
            parent: None,
        })?;
        self.chain_in_force(instrument, env, now)
    }

    /// Whether the instrument with this `reference` is held in force by what it rests on, for
    /// `env` at `now` (its own state aside): see [`Self::chain_in_force`]. The publication
    /// uses it, so that it applies the data plane's rule.
    pub fn rests_in_force(&self, reference: &str, env: Env, now: i64) -> bool {
        self.instruments.get(reference).is_some_and(|&i| self.chain_in_force(i, env, now).is_ok())
    }

    /// No deliberation in force replaced `instrument`, and every instrument it rests on (up to
    /// the root) is in force.
    fn chain_in_force(&self, instrument: u32, env: Env, now: i64) -> Result<(), Deny> {
        let ins_id = InstrumentId(instrument);
        let refuse = |(code, reason), parent| Deny { code, reason, instrument: Some(ins_id), grant: None, parent };
        let info = &self.instrument_info[instrument as usize];
        // The replacing deliberation's own state decides (a deliberation is never replaced
        // itself, so this does not recurse).
        if let Some(&by) =
            info.replaced_by.iter().find(|by| self.instrument_info[by.index()].in_force(env, now).is_ok())
        {
            return Err(refuse((DenyCode::InstrumentNotActive, Reason::Replaced), Some(by)));
        }
        let mut next = info.parent;
        for _ in 0..MAX_DEPTH {
            let Some(p) = next else { return Ok(()) };
            let parent = &self.instrument_info[p.index()];
            if let Err((code, _)) = parent.in_force(env, now) {
                let reason =
                    if code == DenyCode::FlowSuspended { Reason::ParentSuspended } else { Reason::ParentNotActive };
                return Err(refuse((code, reason), Some(p)));
            }
            next = parent.parent;
        }
        // Deeper than any chain validation lets through: refuse rather than trust it.
        Err(refuse((DenyCode::InstrumentNotActive, Reason::ParentNotActive), next))
    }

    fn check_role(&self, org: u32, end_user: Option<&str>, role: u32, now: i64) -> Result<(), Reason> {
        let end_user = end_user.ok_or(Reason::EndUserMissing)?;
        let &(start, len) = self.roles.get(&org).and_then(|users| users.get(end_user)).ok_or(Reason::RoleMissing)?;
        let mut result = Err(Reason::RoleMissing);
        for r in &self.role_pool[start as usize..(start + len) as usize] {
            if r.role != role {
                continue;
            }
            if now >= r.from && now < r.until {
                return Ok(());
            }
            result = Err(if now < r.from { Reason::RoleNotYetValid } else { Reason::RoleExpired });
        }
        result
    }
}
