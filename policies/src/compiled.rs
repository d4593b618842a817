//! The immutable snapshot the data plane reads: built once per policy change from a validated
//! [`Policy`], swapped atomically by the gateway.
//!
//! Everything a decision needs is resolved here, at compile time: ids are interned to integers,
//! grants are indexed by (organisation, service) with kinds and adherents expanded to concrete
//! organisations, fields are bitsets, times are integer seconds. A request then does a handful
//! of hash lookups of borrowed strings and integer comparisons (see `decide.rs`).

use rustc_hash::FxHashMap;

use crate::conditions::Conditions;
use crate::ids::Kbo;
use crate::model::{Date, Env, InstrumentKind, OrgKind, Policy, Rate, Recipient, Revalidation, Status};

const DAY: i64 = 86_400;

/// A set of a service's fields, by their index in the service's field list.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct FieldMask(pub u64);

impl FieldMask {
    pub const fn contains(self, index: usize) -> bool {
        index < 64 && self.0 & (1 << index) != 0
    }
    pub const fn count(self) -> u32 {
        self.0.count_ones()
    }
    /// The indices in the set, lowest first.
    pub fn indices(self) -> impl Iterator<Item = usize> {
        let mut rest = self.0;
        std::iter::from_fn(move || {
            let i = rest.trailing_zeros() as usize;
            rest &= rest.wrapping_sub(1);
            (i < 64).then_some(i)
        })
    }
}

macro_rules! id {
    ($(#[$m:meta])* $name:ident) => {
        $(#[$m])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
        pub struct $name(pub u32);
        impl $name {
            pub const fn index(self) -> usize {
                self.0 as usize
            }
        }
    };
}
id!(
    /// An organisation of the snapshot.
    OrgId
);
id!(
    /// A service of the snapshot.
    ServiceId
);
id!(
    /// An instrument of the snapshot.
    InstrumentId
);
id!(
    /// A grant of the snapshot (exceptional accesses included).
    GrantId
);
id!(
    /// An interned purpose code.
    PurposeId
);

#[derive(Debug, Clone)]
pub struct OrgInfo {
    pub kbo: Kbo,
    pub name: Box<str>,
    pub kind: OrgKind,
    pub handle: Option<Box<str>>,
    /// A pinned organisation's certificate fingerprints: no other certificate identifies it.
    pub pins: Option<Box<[[u8; 32]]>>,
}

impl OrgInfo {
    /// Whether `certificate` may identify this organisation.
    pub fn accepts(&self, certificate: Option<&[u8; 32]>) -> bool {
        self.pins.as_ref().is_none_or(|p| certificate.is_some_and(|c| p.contains(c)))
    }
}

#[derive(Debug, Clone)]
pub struct ServiceInfo {
    pub id: Box<str>,
    pub fields: Vec<Box<str>>,
    /// The statutory ceiling of the service's source, when it declares one.
    pub ceiling: Option<CeilingInfo>,
    /// The re-validation its source sets for consents.
    pub revalidation: Option<Revalidation>,
}

/// A source's statutory ceiling, compiled for one of its services.
#[derive(Debug, Clone)]
pub struct CeilingInfo {
    /// The legal text, named in refusals.
    pub basis: Box<str>,
    /// Bit `kind_bit(k)` set for every kind that may receive; 0: any kind.
    pub(crate) kinds: u16,
    pub(crate) consent: bool,
    /// Interned purposes allowed; `None`: any.
    pub(crate) purposes: Option<Box<[u32]>>,
    /// The fields that may leave.
    pub(crate) fields: FieldMask,
}

#[derive(Debug, Clone)]
pub struct InstrumentInfo {
    pub reference: Box<str>,
    pub kind: InstrumentKind,
    pub status: Status,
    pub suspended_reason: Option<Box<str>>,
    pub from: i64,
    pub until: i64,
    /// The instrument this one rests on: it is never more in force than its parent.
    pub parent: Option<InstrumentId>,
    /// Deliberations that replace this protocol: once one is in force, this one is not.
    pub replaced_by: Box<[InstrumentId]>,
}

impl InstrumentInfo {
    /// Whether the instrument itself (not its parents) is in force at `now` for `env`:
    /// `Err` carries the refusal.
    pub(crate) fn in_force(&self, env: Env, now: i64) -> Result<(), (crate::DenyCode, crate::Reason)> {
        use crate::{DenyCode, Reason};
        match self.status {
            Status::Suspended => return Err((DenyCode::FlowSuspended, Reason::Suspended)),
            Status::Draft => return Err((DenyCode::InstrumentNotActive, Reason::Draft)),
            Status::Revoked => return Err((DenyCode::InstrumentNotActive, Reason::Revoked)),
            Status::Expired => return Err((DenyCode::InstrumentNotActive, Reason::Expired)),
            Status::Test if env == Env::Production => {
                return Err((DenyCode::InstrumentNotActive, Reason::TestPhaseOnly));
            }
            Status::Test | Status::Active => {}
        }
        if now < self.from {
            return Err((DenyCode::InstrumentNotActive, Reason::NotYetValid));
        }
        if now >= self.until {
            return Err((DenyCode::InstrumentNotActive, Reason::Expired));
        }
        Ok(())
    }
}

/// How deep a chain of parents may go; validation refuses cycles, this bounds the walk anyway.
pub(crate) const MAX_DEPTH: usize = 16;

#[derive(Debug, Clone)]
pub(crate) struct CGrant {
    pub(crate) id: Box<str>,
    pub(crate) instrument: u32,
    pub(crate) service: u32,
    /// Range in `purpose_pool`.
    pub(crate) purposes: (u32, u32),
    pub(crate) fields: FieldMask,
    pub(crate) consent: bool,
    /// Bit 0: test, bit 1: production.
    pub(crate) envs: u8,
    pub(crate) from: i64,
    pub(crate) until: i64,
    pub(crate) role: Option<u32>,
    /// Exceptional accesses open a grant to one named end user.
    pub(crate) end_user: Option<Box<str>>,
    pub(crate) rate: Option<Rate>,
    /// "Where" and "when", when the grant sets them.
    pub(crate) conditions: Option<Box<Conditions>>,
}

#[derive(Debug, Clone, Copy)]
pub(crate) struct Entry {
    pub(crate) grant: u32,
    /// False for an organisation eligible for a general instrument that has not adhered.
    pub(crate) adhered: bool,
}

#[derive(Debug, Clone, Copy)]
pub(crate) struct RoleEntry {
    pub(crate) role: u32,
    pub(crate) from: i64,
    pub(crate) until: i64,
}

/// The compiled policy.
#[derive(Debug, Default)]
pub struct Snapshot {
    pub(crate) version: u64,
    pub(crate) orgs: FxHashMap<u64, u32>,
    pub(crate) org_info: Vec<OrgInfo>,
    pub(crate) services: FxHashMap<Box<str>, u32>,
    pub(crate) service_info: Vec<ServiceInfo>,
    pub(crate) instruments: FxHashMap<Box<str>, u32>,
    pub(crate) instrument_info: Vec<InstrumentInfo>,
    pub(crate) purposes: FxHashMap<Box<str>, u32>,
    pub(crate) purpose_names: Vec<Box<str>>,
    pub(crate) grants: Vec<CGrant>,
    pub(crate) purpose_pool: Vec<u32>,
    /// (org << 32 | service) → range in `entries`.
    pub(crate) index: FxHashMap<u64, (u32, u32)>,
    pub(crate) entries: Vec<Entry>,
    /// org → end user → range in `role_pool`.
    pub(crate) roles: FxHashMap<u32, FxHashMap<Box<str>, (u32, u32)>>,
    pub(crate) role_pool: Vec<RoleEntry>,
    pub(crate) role_names: FxHashMap<Box<str>, u32>,
}

fn start_of(d: Option<&Date>) -> i64 {
    d.map_or(i64::MIN, |d| d.days() * DAY)
}

/// `valid_until` is inclusive: the whole day counts.
fn end_of(d: Option<&Date>) -> i64 {
    d.map_or(i64::MAX, |d| (d.days() + 1) * DAY)
}

/// A grant opened by a tacit approval (an exceptional access, a DAM sheet): valid from the 7th
/// day after the advice to the end of `until`, in both environments; consent follows the
/// source's ceiling, as for every other grant.
fn tacit_grant(id: &str, instrument: u32, service: u32, fields: FieldMask, from_day: i64, until: &Date) -> CGrant {
    CGrant {
        id: id.into(),
        instrument,
        service,
        purposes: (0, 0),
        fields,
        consent: false,
        envs: env_bit(Env::Test) | env_bit(Env::Production),
        from: from_day * DAY,
        until: end_of(Some(until)),
        role: None,
        end_user: None,
        rate: None,
        conditions: None,
    }
}

fn intern(map: &mut FxHashMap<Box<str>, u32>, names: &mut Vec<Box<str>>, s: &str) -> u32 {
    if let Some(&i) = map.get(s) {
        return i;
    }
    let i = names.len() as u32;
    names.push(s.into());
    map.insert(s.into(), i);
    i
}

impl Snapshot {
    /// Compiles a validated policy. Entries that reference something unknown are skipped
    /// (bundle validation reports them; compiling never panics).
    pub fn compile(policy: &Policy, version: u64) -> Self {
        let mut s = Snapshot { version, ..Snapshot::default() };
        for o in &policy.organisations {
            if s.orgs.contains_key(&o.kbo.as_u64()) {
                continue;
            }
            s.orgs.insert(o.kbo.as_u64(), s.org_info.len() as u32);
            s.org_info.push(OrgInfo {
                kbo: o.kbo,
                name: o.name.as_str().into(),
                kind: o.kind,
                handle: o.handle.as_deref().map(Into::into),
                pins: o.pinned.then(|| {
                    o.certificates.iter().filter_map(|c| crate::conditions::fingerprint(&c.fingerprint)).collect()
                }),
            });
        }
        for svc in &policy.services {
            s.services.insert(svc.id.as_str().into(), s.service_info.len() as u32);
            let fields: Vec<Box<str>> = svc.fields.iter().map(|f| f.as_str().into()).collect();
            let source = policy.sources.iter().find(|x| x.id == svc.source);
            let ceiling = source.and_then(|x| x.ceiling.as_ref()).map(|c| CeilingInfo {
                basis: c.basis.as_str().into(),
                kinds: c.recipients.iter().fold(0, |acc, k| acc | kind_bit(*k)),
                consent: c.consent,
                purposes: (!c.purposes.is_empty())
                    .then(|| c.purposes.iter().map(|p| intern(&mut s.purposes, &mut s.purpose_names, p)).collect()),
                fields: FieldMask(fields.iter().enumerate().fold(0u64, |acc, (i, f)| {
                    if i < 64 && (c.fields.is_empty() || c.fields.iter().any(|x| **x == **f)) {
                        acc | 1 << i
                    } else {
                        acc
                    }
                })),
            });
            let revalidation = source.and_then(|x| x.revalidation);
            s.service_info.push(ServiceInfo { id: svc.id.as_str().into(), fields, ceiling, revalidation });
        }
        for ins in &policy.instruments {
            s.instruments.insert(ins.reference.as_str().into(), s.instrument_info.len() as u32);
            s.instrument_info.push(InstrumentInfo {
                reference: ins.reference.as_str().into(),
                kind: ins.kind,
                status: ins.effective_status(),
                suspended_reason: ins.suspended_reason.as_deref().map(Into::into),
                from: start_of(ins.valid_from.as_ref()),
                until: end_of(ins.valid_until.as_ref()),
                parent: None,
                replaced_by: Box::default(),
            });
        }
        // Links between instruments, once every reference has its id.
        let mut replaced: FxHashMap<u32, Vec<InstrumentId>> = FxHashMap::default();
        for (i, ins) in policy.instruments.iter().enumerate() {
            let parent = ins.parent.as_deref().and_then(|r| s.instruments.get(r)).copied();
            // A parent that is the instrument itself would be a cycle (validation refuses it).
            s.instrument_info[i].parent = parent.filter(|&p| p as usize != i).map(InstrumentId);
            for r in &ins.replaces {
                if let Some(&old) = s.instruments.get(r.as_str()) {
                    replaced.entry(old).or_default().push(InstrumentId(i as u32));
                }
            }
        }
        for (old, by) in replaced {
            s.instrument_info[old as usize].replaced_by = by.into_boxed_slice();
        }
        let mut role_names = Vec::new();

        // (org, service) → entries, collected then flattened.
        let mut pending: FxHashMap<u64, Vec<Entry>> = FxHashMap::default();
        for (ii, ins) in policy.instruments.iter().enumerate() {
            // Only adhesions in force: a request under examination or in onboarding, a refused
            // or withdrawn one, opens nothing.
            let adherents: Vec<u32> = ins
                .adhesions
                .iter()
                .filter(|a| a.in_force())
                .filter_map(|a| s.orgs.get(&a.org.as_u64()).copied())
                .collect();
            for g in &ins.grants {
                let Some(&service) = s.services.get(g.service.as_str()) else { continue };
                let Some(fields) = s.field_mask(service, &g.fields) else { continue };
                let role = g.end_user_role.as_deref().map(|r| intern(&mut s.role_names, &mut role_names, r));
                let grant = s.push_grant(
                    CGrant {
                        id: g.id.as_str().into(),
                        instrument: ii as u32,
                        service,
                        purposes: (0, 0),
                        fields,
                        consent: g.consent,
                        envs: g.environments.iter().fold(0u8, |acc, e| acc | env_bit(*e)),
                        from: start_of(g.valid_from.as_ref()),
                        until: end_of(g.valid_until.as_ref()),
                        role,
                        end_user: None,
                        rate: g.rate,
                        conditions: Conditions::compile(g.origin.as_ref(), &g.when, &policy.zones),
                    },
                    &g.purposes,
                );
                // Expand the recipient to concrete organisations.
                let mut add = |org: u32, adhered: bool| {
                    pending.entry(key(org, service)).or_default().push(Entry { grant, adhered });
                };
                match &g.recipient {
                    Recipient::Org(k) => {
                        if let Some(&o) = s.orgs.get(&k.as_u64()) {
                            add(o, true);
                        }
                    }
                    Recipient::Kind(kind) => {
                        for (o, info) in s.org_info.iter().enumerate() {
                            if info.kind == *kind {
                                add(o as u32, true);
                            }
                        }
                    }
                    Recipient::Adherents(_) => {
                        for (o, info) in s.org_info.iter().enumerate() {
                            let o = o as u32;
                            if adherents.contains(&o) {
                                add(o, true);
                            } else if ins.eligible.contains(&info.kind) {
                                add(o, false);
                            }
                        }
                    }
                }
            }
        }
        for x in &policy.exceptional_access {
            // No advice yet, an unfavourable one, a remark within 7 days, or withdrawn.
            let Some(approved_from_day) = x.approved_from_day() else { continue };
            let (Some(&ins), Some(&service), Some(&org)) = (
                s.instruments.get(x.instrument.as_str()),
                s.services.get(x.service.as_str()),
                s.orgs.get(&x.org.as_u64()),
            ) else {
                continue;
            };
            let Some(fields) = s.field_mask(service, &x.fields) else { continue };
            let tacit = tacit_grant(&x.id, ins, service, fields, approved_from_day, &x.valid_until);
            let grant = s.push_grant(CGrant { end_user: Some(x.end_user.as_str().into()), ..tacit }, &x.purposes);
            pending.entry(key(org, service)).or_default().push(Entry { grant, adhered: true });
        }
        for d in &policy.dam_sheets {
            // Authorized tacitly 7 days after a favourable SSIPVP advice that integrates a
            // favourable ICT advice, without a remark or a withdrawal.
            let Some(approved_from_day) = d.approved_from_day() else { continue };
            let (Some(&ins), Some(&org)) = (s.instruments.get(d.instrument.as_str()), s.orgs.get(&d.org.as_u64()))
            else {
                continue;
            };
            let role = intern(&mut s.role_names, &mut role_names, &d.end_user_role);
            for a in &d.access {
                let Some(&service) = s.services.get(a.service.as_str()) else { continue };
                let Some(fields) = s.field_mask(service, &a.fields) else { continue };
                let tacit = tacit_grant(&d.id, ins, service, fields, approved_from_day, &d.valid_until);
                let grant = s.push_grant(CGrant { role: Some(role), ..tacit }, &d.purposes);
                pending.entry(key(org, service)).or_default().push(Entry { grant, adhered: true });
            }
        }
        for (k, v) in pending {
            s.index.insert(k, (s.entries.len() as u32, v.len() as u32));
            s.entries.extend(v);
        }

        let mut by_user: FxHashMap<u32, FxHashMap<Box<str>, Vec<RoleEntry>>> = FxHashMap::default();
        for r in policy.roles.iter().filter(|r| r.withdrawn.is_none()) {
            let Some(&org) = s.orgs.get(&r.org.as_u64()) else { continue };
            let role = intern(&mut s.role_names, &mut role_names, &r.role);
            by_user.entry(org).or_default().entry(r.end_user.as_str().into()).or_default().push(RoleEntry {
                role,
                from: start_of(Some(&r.valid_from)),
                until: end_of(Some(&r.valid_until)),
            });
        }
        for (org, users) in by_user {
            let mut m = FxHashMap::default();
            for (user, entries) in users {
                m.insert(user, (s.role_pool.len() as u32, entries.len() as u32));
                s.role_pool.extend(entries);
            }
            s.roles.insert(org, m);
        }
        s
    }

    fn field_mask(&self, service: u32, fields: &[String]) -> Option<FieldMask> {
        let known = &self.service_info.get(service as usize)?.fields;
        let mut mask = 0u64;
        for f in fields {
            let i = known.iter().position(|k| **k == **f)?;
            mask |= 1 << i;
        }
        Some(FieldMask(mask))
    }

    fn push_grant(&mut self, mut g: CGrant, purposes: &[String]) -> u32 {
        let start = self.purpose_pool.len() as u32;
        for p in purposes {
            let id = intern(&mut self.purposes, &mut self.purpose_names, p);
            self.purpose_pool.push(id);
        }
        g.purposes = (start, purposes.len() as u32);
        self.grants.push(g);
        (self.grants.len() - 1) as u32
    }

    pub fn version(&self) -> u64 {
        self.version
    }

    pub fn organisations(&self) -> &[OrgInfo] {
        &self.org_info
    }

    pub fn organisation(&self, kbo: Kbo) -> Option<&OrgInfo> {
        self.orgs.get(&kbo.as_u64()).map(|&i| &self.org_info[i as usize])
    }

    pub fn instrument(&self, id: InstrumentId) -> Option<&InstrumentInfo> {
        self.instrument_info.get(id.index())
    }

    pub fn grant_name(&self, id: GrantId) -> Option<&str> {
        self.grants.get(id.index()).map(|g| &*g.id)
    }

    pub fn service(&self, id: &str) -> Option<(ServiceId, &ServiceInfo)> {
        self.services.get(id).map(|&i| (ServiceId(i), &self.service_info[i as usize]))
    }

    /// The service a decision names (an index, no lookup).
    pub fn service_info(&self, id: ServiceId) -> Option<&ServiceInfo> {
        self.service_info.get(id.index())
    }

    /// The names of the fields in `mask` of `service`, in the service's order.
    pub fn field_names<'s>(&'s self, service: ServiceId, mask: FieldMask) -> impl Iterator<Item = &'s str> + 's {
        let fields = self.service_info(service).map_or(&[][..], |s| &s.fields[..]);
        mask.indices().map_while(move |i| fields.get(i).map(|f| &**f))
    }

    pub fn grant_count(&self) -> usize {
        self.grants.len()
    }

    /// Whether some grant of `service` for `purpose` rests on the data subject's consent (not
    /// for the request path: it scans the grants).
    pub fn consent_based(&self, service: &str, purpose: &str) -> bool {
        let (Some(&svc), Some(&p)) = (self.services.get(service), self.purposes.get(purpose)) else { return false };
        let ceiling_consent = self.service_info[svc as usize].ceiling.as_ref().is_some_and(|c| c.consent);
        self.grants.iter().any(|g| {
            (g.consent || ceiling_consent)
                && g.service == svc
                && self.purpose_pool[g.purposes.0 as usize..(g.purposes.0 + g.purposes.1) as usize].contains(&p)
        })
    }
}

/// The bit of an organisation kind in a ceiling's set of kinds.
pub(crate) const fn kind_bit(k: OrgKind) -> u16 {
    1 << (k as u16)
}

pub(crate) const fn env_bit(e: Env) -> u8 {
    match e {
        Env::Test => 1,
        Env::Production => 2,
    }
}

pub(crate) const fn key(org: u32, service: u32) -> u64 {
    (org as u64) << 32 | service as u64
}

#[cfg(test)]
mod tests {
    use super::FieldMask;

    #[test]
    fn a_masks_indices_are_its_set_bits_lowest_first() {
        for bits in [0u64, 1, 0b1011_0000, 1 << 63, u64::MAX, 0x8000_0000_0000_0001] {
            let expected: Vec<usize> = (0..64).filter(|&i| FieldMask(bits).contains(i)).collect();
            assert_eq!(FieldMask(bits).indices().collect::<Vec<_>>(), expected, "{bits:#x}");
        }
    }
}
