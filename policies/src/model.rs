//! The legal model (DOMAIN.md §2): organisations, sources and services, the instruments that
//! authorize flows, their grants, adhesions, end-user roles and exceptional accesses.
//!
//! These are the owned, human-facing types a bundle is read into (`bundle.rs`); the data plane
//! never reads them directly but a [`crate::compiled::Snapshot`] built from them.

use std::fmt;

use serde::{Deserialize, Serialize};

use crate::ids::Kbo;

/// A calendar date (`2023-06-12`). A bundle may write it as a TOML local date or as a string;
/// JSON (the control plane, the store) carries it as a string, and so does an exported bundle.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Date(time::Date);

impl Date {
    pub const fn new(date: time::Date) -> Self {
        Date(date)
    }

    /// Days since 1970-01-01.
    pub fn days(self) -> i64 {
        i64::from(self.0.to_julian_day()) - 2_440_588
    }

    /// The date `days` days after 1970-01-01.
    pub fn from_days(days: i64) -> Option<Self> {
        let jd = i32::try_from(days + 2_440_588).ok()?;
        time::Date::from_julian_day(jd).ok().map(Date)
    }

    pub fn parse(s: &str) -> Result<Self, String> {
        let bad = || format!("'{s}' is not a plain date like 2024-01-31");
        let b = s.as_bytes();
        if b.len() != 10 || b[4] != b'-' || b[7] != b'-' {
            return Err(bad());
        }
        let num = |r: std::ops::Range<usize>| s.get(r).filter(|t| t.bytes().all(|c| c.is_ascii_digit()));
        let (Some(y), Some(m), Some(d)) = (num(0..4), num(5..7), num(8..10)) else { return Err(bad()) };
        let (y, m, d) = (y.parse::<i32>(), m.parse::<u8>(), d.parse::<u8>());
        let (Ok(y), Ok(m), Ok(d)) = (y, m, d) else { return Err(bad()) };
        let month = time::Month::try_from(m).map_err(|_| bad())?;
        time::Date::from_calendar_date(y, month, d).map(Date).map_err(|_| bad())
    }
}

impl std::str::FromStr for Date {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        Date::parse(s)
    }
}

impl fmt::Display for Date {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:04}-{:02}-{:02}", self.0.year(), u8::from(self.0.month()), self.0.day())
    }
}

impl Serialize for Date {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Date {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> serde::de::Visitor<'de> for V {
            type Value = Date;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a plain date like 2024-01-31")
            }
            fn visit_str<E: serde::de::Error>(self, s: &str) -> Result<Date, E> {
                Date::parse(s).map_err(E::custom)
            }
            // TOML hands its date values over as a one-entry map holding the text.
            fn visit_map<A: serde::de::MapAccess<'de>>(self, mut map: A) -> Result<Date, A::Error> {
                let Some((_, text)) = map.next_entry::<String, String>()? else {
                    return Err(serde::de::Error::custom("empty date"));
                };
                Date::parse(&text).map_err(serde::de::Error::custom)
            }
        }
        d.deserialize_any(V)
    }
}

/// What kind of organisation; grants and general instruments can name a kind.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum OrgKind {
    /// A Flemish public instance (the only callers of the statutory account and contact sources).
    FlemishInstance,
    FederalAuthority,
    LocalAuthority,
    /// An authority outside the Flemish and federal levels.
    ExternalAuthority,
    FinancialInstitution,
    Insurer,
    LeasingCompany,
    Company,
    UmbrellaOrganisation,
    /// A trusted organisation acting for an authenticated citizen.
    CitizenAccessPoint,
    /// A data owner (manager of an authentic source).
    DataOwner,
    /// The integrator itself.
    Integrator,
}

impl OrgKind {
    pub const fn as_str(self) -> &'static str {
        match self {
            OrgKind::FlemishInstance => "flemish-instance",
            OrgKind::FederalAuthority => "federal-authority",
            OrgKind::LocalAuthority => "local-authority",
            OrgKind::ExternalAuthority => "external-authority",
            OrgKind::FinancialInstitution => "financial-institution",
            OrgKind::Insurer => "insurer",
            OrgKind::LeasingCompany => "leasing-company",
            OrgKind::Company => "company",
            OrgKind::UmbrellaOrganisation => "umbrella-organisation",
            OrgKind::CitizenAccessPoint => "citizen-access-point",
            OrgKind::DataOwner => "data-owner",
            OrgKind::Integrator => "integrator",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Organisation {
    pub kbo: Kbo,
    pub name: String,
    pub kind: OrgKind,
    /// Short name used for file names (the demo's client certificates).
    #[serde(default)]
    pub handle: Option<String>,
    #[serde(default)]
    pub sectors: Vec<String>,
    /// The code under which this organisation issues deliberations (`CSI-AF`, `VTC`): it then
    /// holds the role "deliberation authority" for the deliberations and general instruments
    /// that name this code as their `authority`.
    #[serde(default)]
    pub authority: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Source {
    pub id: String,
    pub name: String,
    /// The data owner's enterprise number.
    pub owner: Kbo,
    /// The privacy office (SSIPVP, DPO) that advises on access to this source; the data owner's
    /// own office when absent.
    #[serde(default)]
    pub privacy_office: Option<Kbo>,
    /// What the law allows whatever instrument is registered (decree of 18 July 2008 art. 5/4,
    /// 7/4; a consent-based flow). Declared by the integrator only.
    #[serde(default)]
    pub ceiling: Option<Ceiling>,
    /// The fewest days the audit trail must keep the records of calls to this source (seed
    /// 003: ten years); the gateway never prunes sooner.
    #[serde(default)]
    pub audit_retention_days: Option<u32>,
}

impl Policy {
    /// The longest minimum audit retention a source declares, with that source.
    pub fn audit_retention_floor(&self) -> Option<(u32, &str)> {
        self.sources.iter().filter_map(|s| s.audit_retention_days.map(|d| (d, s.id.as_str()))).max_by_key(|(d, _)| *d)
    }
}

impl Source {
    /// The organisation that gives the privacy advice on this source.
    pub fn privacy_office(&self) -> Kbo {
        self.privacy_office.unwrap_or(self.owner)
    }
}

/// The statutory limits of a source: no instrument, grant or exceptional access goes beyond
/// them, and `decide()` applies them to every call whatever the instruments say.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Ceiling {
    /// The legal text that sets the limits, named in refusals.
    pub basis: String,
    /// The kinds of organisation that may receive data; empty: any.
    #[serde(default)]
    pub recipients: Vec<OrgKind>,
    /// Every call needs the data subject's consent, under whatever instrument.
    #[serde(default)]
    pub consent: bool,
    /// The purposes data may be obtained for; empty: any.
    #[serde(default)]
    pub purposes: Vec<String>,
    /// The fields (of the source's services) that may leave; empty: all.
    #[serde(default)]
    pub fields: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Service {
    /// `<source>.<service>`, as in the adapters' catalogue.
    pub id: String,
    pub source: String,
    /// The fields a grant may give one by one (at most 64).
    pub fields: Vec<String>,
}

/// Where an instrument is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Status {
    Draft,
    /// Test phase: only the test environment answers.
    Test,
    Active,
    Suspended,
    Expired,
    Revoked,
}

/// The DIV convention lifecycle (seed 000).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum ConventionState {
    Requested,
    DeliberationReceived,
    ConventionSent,
    SignedByBeneficiary,
    TestPhase,
    Active,
    Published,
    Suspended,
    Terminated,
}

impl ConventionState {
    /// The status a convention in this state has for the data plane.
    pub const fn status(self) -> Status {
        match self {
            ConventionState::Requested
            | ConventionState::DeliberationReceived
            | ConventionState::ConventionSent
            | ConventionState::SignedByBeneficiary => Status::Draft,
            ConventionState::TestPhase => Status::Test,
            ConventionState::Active | ConventionState::Published => Status::Active,
            ConventionState::Suspended => Status::Suspended,
            ConventionState::Terminated => Status::Revoked,
        }
    }
}

/// The 13 elements a protocol must state (Flemish decree of 18 July 2008, art. 8).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProtocolElements {
    /// (1) identity of the controllers.
    pub controllers: Option<String>,
    /// (2) purposes of the communication.
    pub purposes: Option<String>,
    /// (3) categories and extent of the data, per proportionality.
    pub data: Option<String>,
    /// (4) categories of recipients and third parties who may also obtain them.
    pub recipients: Option<String>,
    /// (5) legal basis of communication and collection.
    pub legal_basis: Option<String>,
    /// (6) security measures.
    pub security: Option<String>,
    /// (7) periodicity.
    pub periodicity: Option<String>,
    /// (8) duration.
    pub duration: Option<String>,
    /// (9) sanctions for non-compliance.
    pub sanctions: Option<String>,
    /// (10) the purposes for which the data were originally collected.
    pub original_purposes: Option<String>,
    /// (11) for further processing, the compatibility analysis.
    pub compatibility: Option<String>,
    /// (12) data-quality agreements and the authentic-source framework.
    pub data_quality: Option<String>,
    /// (13) specific measures: format, access logging, reference register.
    pub specific_measures: Option<String>,
}

impl ProtocolElements {
    /// The elements in art. 8 order: (number, key, value).
    pub fn elements(&self) -> [(u8, &'static str, Option<&str>); 13] {
        [
            (1, "controllers", self.controllers.as_deref()),
            (2, "purposes", self.purposes.as_deref()),
            (3, "data", self.data.as_deref()),
            (4, "recipients", self.recipients.as_deref()),
            (5, "legal_basis", self.legal_basis.as_deref()),
            (6, "security", self.security.as_deref()),
            (7, "periodicity", self.periodicity.as_deref()),
            (8, "duration", self.duration.as_deref()),
            (9, "sanctions", self.sanctions.as_deref()),
            (10, "original_purposes", self.original_purposes.as_deref()),
            (11, "compatibility", self.compatibility.as_deref()),
            (12, "data_quality", self.data_quality.as_deref()),
            (13, "specific_measures", self.specific_measures.as_deref()),
        ]
    }
}

/// What kind of instrument, with the particulars of each.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum InstrumentKind {
    /// A deliberation of the CSI or the Flemish committee (authority + number + date).
    Deliberation,
    /// A general deliberation or general protocol; organisations of its sector adhere to it.
    General,
    /// A protocol between controllers (all 13 art. 8 elements).
    Protocol,
    /// A convention with an imposed layout, following a deliberation (seed 000).
    Convention,
    /// Access resting on the law itself (e.g. art. 5/5, 7/4).
    Statutory,
    /// A role-based access matrix ("who – where – when – in which capacity").
    AccessMatrix,
}

impl InstrumentKind {
    /// The name bundles and the API use (`access-matrix`).
    pub const fn as_str(self) -> &'static str {
        match self {
            InstrumentKind::Deliberation => "deliberation",
            InstrumentKind::General => "general",
            InstrumentKind::Protocol => "protocol",
            InstrumentKind::Convention => "convention",
            InstrumentKind::Statutory => "statutory",
            InstrumentKind::AccessMatrix => "access-matrix",
        }
    }
}

/// An organisation's adhesion to a general instrument.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Adhesion {
    pub org: Kbo,
    /// The person who asked for it.
    pub requested_by: String,
    pub date: Date,
    /// Reference of the DPO's advice.
    pub dpo_advice: String,
    /// The organisation confirmed it respects the instrument's modalities.
    pub modalities_confirmed: bool,
}

/// Who a grant is for.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub enum Recipient {
    /// One organisation.
    Org(Kbo),
    /// Every organisation of a kind.
    Kind(OrgKind),
    /// The organisations that adhered to the (general) instrument.
    Adherents(bool),
}

/// Environments a grant opens.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Env {
    Test,
    Production,
}

/// Periodicity: at most `max` calls per `per`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Rate {
    pub max: u32,
    pub per: RatePeriod,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum RatePeriod {
    Second,
    Minute,
    Hour,
    Day,
}

impl RatePeriod {
    pub const fn seconds(self) -> u32 {
        match self {
            RatePeriod::Second => 1,
            RatePeriod::Minute => 60,
            RatePeriod::Hour => 3_600,
            RatePeriod::Day => 86_400,
        }
    }
}

/// What an instrument allows one recipient (or kind, or its adherents) to obtain.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Grant {
    /// Stable id, named in audit records.
    pub id: String,
    pub recipient: Recipient,
    pub service: String,
    pub purposes: Vec<String>,
    /// The granted fields (proportionality); a subset of the service's.
    pub fields: Vec<String>,
    /// Whether the data subject's consent must be on file.
    #[serde(default)]
    pub consent: bool,
    #[serde(default = "both_envs")]
    pub environments: Vec<Env>,
    #[serde(default)]
    pub valid_from: Option<Date>,
    #[serde(default)]
    pub valid_until: Option<Date>,
    #[serde(default)]
    pub rate: Option<Rate>,
    /// The end user must hold this role (with validity) at the recipient.
    #[serde(default)]
    pub end_user_role: Option<String>,
}

fn both_envs() -> Vec<Env> {
    vec![Env::Test, Env::Production]
}

/// A legal instrument.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Instrument {
    /// The reference callers name in `X-Legal-Basis`.
    pub reference: String,
    pub kind: InstrumentKind,
    pub title: String,
    /// Deliberations and general instruments: the deciding authority (e.g. `CSI-AF`).
    #[serde(default)]
    pub authority: Option<String>,
    /// Deliberations and general instruments: their number (e.g. `18/2023`).
    #[serde(default)]
    pub number: Option<String>,
    #[serde(default)]
    pub date: Option<Date>,
    /// A special authorization or convention rests on this instrument: it is never more in
    /// force than its parent.
    #[serde(default)]
    pub parent: Option<String>,
    /// A deliberation that replaces protocols (decree of 18 July 2008, art. 8 §1/1, §2): they
    /// stop when it comes into force.
    #[serde(default)]
    pub replaces: Vec<String>,
    /// Protocols (general or not): the reference of the data protection officer's advice.
    #[serde(default)]
    pub dpo_advice: Option<String>,
    /// Statutory bases: the legal text and article.
    #[serde(default)]
    pub law: Option<String>,
    #[serde(default)]
    pub article: Option<String>,
    /// General instruments: the kinds of organisation that may adhere.
    #[serde(default)]
    pub eligible: Vec<OrgKind>,
    /// Protocols: the 13 elements of art. 8.
    #[serde(default)]
    pub protocol: Option<ProtocolElements>,
    /// Conventions: lifecycle state (decides the status).
    #[serde(default)]
    pub state: Option<ConventionState>,
    /// A suspended convention: the state it returns to when the suspension is lifted.
    #[serde(default)]
    pub suspended_from: Option<ConventionState>,
    /// The source the instrument is about, when it has no grants to say so (a deliberation, a
    /// framework); its data owner manages the instrument.
    #[serde(default)]
    pub source: Option<String>,
    /// Other kinds: the status.
    #[serde(default)]
    pub status: Option<Status>,
    /// Required when suspended; shown to callers.
    #[serde(default)]
    pub suspended_reason: Option<String>,
    #[serde(default)]
    pub valid_from: Option<Date>,
    #[serde(default)]
    pub valid_until: Option<Date>,
    #[serde(default)]
    pub grants: Vec<Grant>,
    #[serde(default)]
    pub adhesions: Vec<Adhesion>,
}

impl Instrument {
    /// The sources this instrument is about: the one it names and those of its grants'
    /// services (a service id starts with its source's id).
    pub fn sources(&self) -> Vec<&str> {
        let mut v: Vec<&str> = self.source.iter().map(String::as_str).collect();
        for g in &self.grants {
            if let Some((src, _)) = g.service.split_once('.')
                && !v.contains(&src)
            {
                v.push(src);
            }
        }
        v
    }

    /// Whether this is a protocol: one of that kind, or a general instrument that states the
    /// art. 8 elements (a general protocol). Either must carry all 13 and the DPO's advice.
    pub fn is_protocol(&self) -> bool {
        self.kind == InstrumentKind::Protocol || (self.kind == InstrumentKind::General && self.protocol.is_some())
    }

    /// The status the data plane applies (a convention's follows its state).
    pub fn effective_status(&self) -> Status {
        match (self.kind, self.state) {
            (InstrumentKind::Convention, Some(s)) => s.status(),
            _ => self.status.unwrap_or(Status::Draft),
        }
    }
}

/// An end user's role at an organisation, with its validity (seed 003, 004).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Role {
    pub org: Kbo,
    /// The end user's identifier as sent in `X-End-User`.
    pub end_user: String,
    pub role: String,
    pub valid_from: Date,
    pub valid_until: Date,
}

/// An exceptional access outside the matrix (seed 004 §4): the requesting organisation files it
/// (purpose, data, duration, justification); the privacy office of the matrix's source gives
/// its advice, stamped by the gateway's clock; without a remark of the data owner within 7
/// days of that advice it is approved tacitly. The data owner may withdraw it at any time. It
/// opens one service of the matrix's sources to one end user.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ExceptionalAccess {
    pub id: String,
    pub instrument: String,
    pub org: Kbo,
    pub end_user: String,
    pub service: String,
    pub purposes: Vec<String>,
    pub fields: Vec<String>,
    /// Why the access is needed (the requester's form).
    #[serde(default)]
    pub justification: Option<String>,
    /// The day the privacy office gave its advice (the gateway's clock); none yet: pending.
    #[serde(default)]
    pub advice_date: Option<Date>,
    /// The reference of the privacy office's advice.
    #[serde(default)]
    pub advice: Option<String>,
    /// The advice was unfavourable: never approved.
    #[serde(default)]
    pub advice_unfavourable: bool,
    /// A remark was made within the 7 days: not approved.
    #[serde(default)]
    pub remark: bool,
    /// Withdrawn (by the data owner, or by the requester): no longer approved.
    #[serde(default)]
    pub withdrawn: bool,
    pub valid_until: Date,
}

impl ExceptionalAccess {
    /// Days a remark may come in after the advice; without one the access is approved.
    pub const REMARK_DAYS: i64 = 7;

    /// The day (days since 1970-01-01) from which the access is approved tacitly: the 7th day
    /// after a favourable advice. None while no advice was given, or when it can never be
    /// approved (unfavourable advice, remark, withdrawal).
    pub fn approved_from_day(&self) -> Option<i64> {
        if self.advice_unfavourable || self.remark || self.withdrawn {
            return None;
        }
        self.advice_date.map(|d| d.days() + Self::REMARK_DAYS)
    }
}

/// Everything the bundles describe, merged.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Policy {
    #[serde(default)]
    pub organisations: Vec<Organisation>,
    #[serde(default)]
    pub sources: Vec<Source>,
    #[serde(default)]
    pub services: Vec<Service>,
    #[serde(default)]
    pub instruments: Vec<Instrument>,
    #[serde(default)]
    pub roles: Vec<Role>,
    #[serde(default)]
    pub exceptional_access: Vec<ExceptionalAccess>,
}
