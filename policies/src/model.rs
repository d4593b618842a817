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
    /// An association's number in the association register (`V0001001`): its certificate then
    /// asks "who consulted the data about us" for this vCode as well as its enterprise number.
    #[serde(default)]
    pub vcode: Option<String>,
    /// The client certificates the gateway signed for it from its requests
    /// (`POST /organisations/{kbo}/certificates`): what the metrics count days left on.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub certificates: Vec<OrgCertificate>,
    /// Only the certificates of `certificates` identify it: any other certificate carrying its
    /// enterprise number, even one that chains to a trusted CA, is refused.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub pinned: bool,
}

/// A client certificate the gateway signed for an organisation.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OrgCertificate {
    /// SHA-256 of the certificate (64 hex digits).
    pub fingerprint: String,
    pub common_name: String,
    /// `PRD`, `ACC`, `INT`, or none (production).
    #[serde(default)]
    pub environment: Option<String>,
    /// RFC 3339.
    pub issued_at: String,
    /// The end of its validity, in Unix seconds.
    pub not_after: i64,
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
    /// The ICT service that advises on the technical and security aspects of a DAM sheet
    /// (seed 004 §5); the data owner's own when absent. Declared by the integrator only.
    #[serde(default)]
    pub ict_office: Option<Kbo>,
    /// How often the data subject re-validates a consent given for this source, and what
    /// happens when the time has passed (decree of 18 July 2008 art. 5/6, 7/5).
    #[serde(default)]
    pub revalidation: Option<Revalidation>,
    /// Where the gateway reaches a source registered through the control plane or a bundle;
    /// absent for the built-in sources, which the configuration's `[sources.*]` place.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub upstream: Option<Upstream>,
}

/// The re-validation a source sets for the consents given for it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Revalidation {
    /// Days after the last validation at which the consent is due (365: once a year).
    pub days: u32,
    pub rule: RevalidationRule,
}

/// What a source does with a consent whose re-validation is due.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum RevalidationRule {
    /// The citizen is invited; the consent keeps serving (art. 5/6: the instance is then not
    /// liable for a wrong payment).
    Invite,
    /// The consent stops serving calls until the citizen re-validates it.
    Stop,
}

impl RevalidationRule {
    pub const fn as_str(self) -> &'static str {
        match self {
            RevalidationRule::Invite => "invite",
            RevalidationRule::Stop => "stop",
        }
    }
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

    /// The organisation that gives the ICT advice on a DAM sheet about this source.
    pub fn ict_office(&self) -> Kbo {
        self.ict_office.unwrap_or(self.owner)
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
    /// The fields a grant may give one by one (at most 64); a registered service's are its
    /// catalogue's (the control plane fills them in when the body leaves them out).
    #[serde(default)]
    pub fields: Vec<String>,
    /// How the data plane exposes a service registered through the control plane or a bundle
    /// (route, dialect, subject, imposed layout, field catalogue); absent for the services of
    /// the built-in adapters' catalogue.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exposure: Option<Exposure>,
}

/// A registered service's exposure: everything the data plane needs to route a call, check
/// both messages against the imposed layout and reduce the answer to the granted fields.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Exposure {
    pub method: HttpMethod,
    /// The path on the gateway's data plane (exact match), `/…`.
    pub path: String,
    /// The path on the source's upstream, appended to its registered URL.
    pub upstream_path: String,
    pub dialect: Dialect,
    /// What the caller names in `X-Subject`: the data subject of the call (consent, the
    /// citizen's report), or none.
    #[serde(default)]
    pub subject: SubjectIn,
    pub layout: RegisteredLayout,
    /// Every grantable field of the answer and where it is, plus the parts always kept.
    pub catalogue: Vec<CatalogueEntry>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "UPPERCASE")]
pub enum HttpMethod {
    Get,
    Post,
}

impl HttpMethod {
    pub const fn as_str(self) -> &'static str {
        match self {
            HttpMethod::Get => "GET",
            HttpMethod::Post => "POST",
        }
    }
}

/// How a service speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Dialect {
    /// JSON; the layouts are JSON Schemas (2020-12).
    Json,
    /// SOAP 1.1 / XML; the layout is an XSD.
    Soap,
}

/// What `X-Subject` holds for a registered service.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SubjectIn {
    /// No subject header: the call is not about one data subject named by the caller.
    #[default]
    None,
    Niss,
    Kbo,
    /// A vCode or an enterprise number.
    Association,
}

/// The imposed layout of a registered service: JSON Schemas for a JSON service, an XSD and the
/// names of its request and answer elements for a SOAP service. Schemas are kept as text (the
/// control plane also takes them as JSON objects).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RegisteredLayout {
    /// JSON: the request body's schema; absent: the service takes no body.
    #[serde(default, skip_serializing_if = "Option::is_none", deserialize_with = "json_text")]
    pub request_schema: Option<String>,
    /// JSON: the answer's schema.
    #[serde(default, skip_serializing_if = "Option::is_none", deserialize_with = "json_text")]
    pub response_schema: Option<String>,
    /// SOAP: the XSD of the payloads (one target namespace).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub xsd: Option<String>,
    /// SOAP: the global element the request's Body holds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub request_element: Option<String>,
    /// SOAP: the global element the answer's Body holds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub response_element: Option<String>,
}

/// A schema given as text or as a JSON value (an object in the API, a table in a bundle): kept
/// as JSON text.
fn json_text<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<String>, D::Error> {
    Ok(match Option::<serde_json::Value>::deserialize(d)? {
        None => None,
        Some(serde_json::Value::String(t)) => Some(t),
        Some(v) => Some(v.to_string()),
    })
}

/// One entry of a registered service's field catalogue.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CatalogueEntry {
    /// The grantable field; absent: the part is always kept (the identifiers the caller named).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub field: Option<String>,
    /// Where it is in the answer: a JSON pointer (`*` for every element of an array) or an
    /// element path below the answer element (`Entry/Holder/Niss`).
    pub path: String,
    /// The part identifies a data subject (a NISS for a person, an enterprise number for an
    /// organisation): it must pass its check and is written in the audit record.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub subject: Option<SubjectRole>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SubjectRole {
    Person,
    Organisation,
}

/// Where a registered source is reached: production side, test side, bounds and TLS.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Upstream {
    /// The production side's base URL (`http://` or `https://`).
    pub url: String,
    /// The test side: a base URL, or `sandbox` for a sandbox the gateway generates from the
    /// layouts (valid examples); absent: no test side.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub test: Option<String>,
    /// Whole-answer timeout (default 5000).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout_ms: Option<u64>,
    /// Largest answer read (default 1 MiB).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_response_bytes: Option<u64>,
    /// TLS towards the source: files on the gateway's host, never their content.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls: Option<UpstreamTls>,
}

/// Paths of the PEM files for TLS towards a registered source: its CA, and the gateway's client
/// certificate and key when the source asks for one.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UpstreamTls {
    pub ca: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cert: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key: Option<String>,
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

/// A document that goes with a step of a procedure: its title, and the reference under which
/// its holder files it or the SHA-256 of the file (64 hex digits), or both.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Document {
    pub title: String,
    #[serde(default)]
    pub reference: Option<String>,
    #[serde(default)]
    pub sha256: Option<String>,
}

/// One step of a procedure as it was taken: the state reached, the organisation that took the
/// step and the role it held, the gateway's time, and the evidence given.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Step {
    pub to: String,
    pub by: Kbo,
    pub role: String,
    /// RFC 3339, the gateway's clock.
    pub at: String,
    #[serde(default)]
    pub reason: Option<String>,
    #[serde(default)]
    pub documents: Vec<Document>,
}

/// A signature of a convention (seed 000: the beneficiary signs both copies, the data owner
/// countersigns at activation).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Signature {
    /// `beneficiary` or `data-owner`.
    pub party: String,
    pub org: Kbo,
    /// The person who signed, and in which capacity.
    pub name: String,
    pub capacity: String,
    /// RFC 3339, the gateway's clock when the signature was recorded.
    pub at: String,
}

/// The contact form a convention's beneficiary returns with the signed copies (seed 000 §3).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Contact {
    pub name: String,
    pub email: String,
    #[serde(default)]
    pub phone: Option<String>,
}

/// An advice given on an instrument or a request: by whom, in which office, the reference of
/// the advice and whether it is favourable, stamped by the gateway's clock.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Advice {
    /// `dpo`, `ict` or `ssipvp`.
    pub office: String,
    pub by: Kbo,
    pub reference: String,
    pub favourable: bool,
    /// RFC 3339, the gateway's clock.
    pub at: String,
    #[serde(default)]
    pub documents: Vec<Document>,
}

/// Where an adhesion is in its procedure (seed 001): the organisation files the request; the
/// issuing authority (the CSI) examines it; the organisation then returns the onboarding
/// documentation and the data owner confirms it; the adhesion can be withdrawn.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum AdhesionState {
    Requested,
    Approved,
    Onboarding,
    Active,
    Refused,
    Withdrawn,
}

fn adhesion_active() -> AdhesionState {
    AdhesionState::Active
}

/// An organisation's adhesion to a general instrument.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Adhesion {
    pub org: Kbo,
    /// The person who asked for it.
    pub requested_by: String,
    /// That person's capacity within the organisation.
    #[serde(default)]
    pub capacity: Option<String>,
    /// The organisation's official name and registered seat, as the request gives them.
    #[serde(default)]
    pub official_name: Option<String>,
    #[serde(default)]
    pub seat: Option<String>,
    /// The request's own reference.
    #[serde(default)]
    pub reference: Option<String>,
    /// The day the request was filed (the gateway's clock).
    pub date: Date,
    /// The day the adhesion took effect; the publication shows it.
    #[serde(default)]
    pub active_since: Option<Date>,
    /// Reference of the DPO's advice (general protocols).
    #[serde(default)]
    pub dpo_advice: Option<String>,
    /// The evaluation form that goes with a request to the CSI (seed 001).
    #[serde(default)]
    pub evaluation_form: Option<Document>,
    /// The document proving the requester may act for the organisation.
    #[serde(default)]
    pub mandate: Option<Document>,
    /// The organisation confirmed it respects the instrument's modalities.
    pub modalities_confirmed: bool,
    /// Adhesions declared in a bundle without a state are in force.
    #[serde(default = "adhesion_active")]
    pub state: AdhesionState,
    #[serde(default)]
    pub steps: Vec<Step>,
}

impl Adhesion {
    /// Whether the adherent may call under the instrument.
    pub fn in_force(&self) -> bool {
        self.state == AdhesionState::Active
    }
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
    /// "Where": the call must come from one of these certificates or network zones.
    #[serde(default, rename = "where", skip_serializing_if = "Option::is_none")]
    pub origin: Option<Origin>,
    /// "When": the call must fall in one of these windows (Belgian local time); none: always.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub when: Vec<Window>,
}

/// Where a call under a grant may come from (seed 004: "qui-où-quand"): the calling
/// application's certificate, or a network zone the integrator names. Each list that is given
/// must match.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Origin {
    /// SHA-256 fingerprints of client certificates (64 hex digits).
    #[serde(default)]
    pub certificates: Vec<String>,
    /// Names of zones of [`Policy::zones`].
    #[serde(default)]
    pub zones: Vec<String>,
}

/// A weekly time window in Belgian local time (CET/CEST), `from` inclusive, `until` exclusive.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Window {
    /// `mon` … `sun`.
    pub days: Vec<String>,
    /// `HH:MM`.
    pub from: String,
    pub until: String,
}

/// A network zone the integrator names (an internal network, a ministry's zone).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Zone {
    pub name: String,
    /// CIDR blocks, IPv4 or IPv6 (`10.12.0.0/16`).
    pub networks: Vec<String>,
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
    /// General instruments: the kinds of organisation that may adhere. An access matrix that
    /// names kinds here is a usage convention each of them signs (seed 003): its grants to
    /// `adherents` reach only the organisations whose signature the data owner countersigned.
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
    /// Access matrices: the longest validity, in days, of a role its grants require; the
    /// data owner sets it (seed 003: the role "has a limited validity and must be renewed").
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub role_validity_days: Option<u32>,
    /// Conventions: the version of the convention's text and of the imposed layout it binds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub text_version: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub layout_version: Option<String>,
    /// Conventions: the beneficiary's contact form.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub contact: Option<Contact>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub signatures: Vec<Signature>,
    /// Advice given on the instrument (a protocol's DPO advice).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub advice: Vec<Advice>,
    /// Every step of its procedure taken through the control plane, in order.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub steps: Vec<Step>,
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

    /// Whether organisations join this instrument one by one: a general instrument (adhesion,
    /// seed 001) or an access matrix open to some kinds (the usage convention each user
    /// signs, seed 003).
    pub fn takes_adhesions(&self) -> bool {
        self.kind == InstrumentKind::General || self.signed_matrix()
    }

    /// An access matrix that each eligible organisation signs (seed 003): its "adhesion" is
    /// the user's signature, made active by the data owner's, without examination or
    /// onboarding.
    pub fn signed_matrix(&self) -> bool {
        self.kind == InstrumentKind::AccessMatrix && !self.eligible.is_empty()
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
    /// Deactivated before its end (by the employer, or by the data owner of the matrix that
    /// requires it): it opens nothing any more.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub withdrawn: Option<Step>,
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

/// A DAM sheet (seed 004 §5, *fiche Data & Access Management*): a project team asks access for
/// its data analysts and data managers to pool data of several services, stating objectives
/// and methodology. ICT advises on the technical and security aspects, then the privacy office
/// (SSIPVP) gives its advice, which integrates ICT's; without a remark of the data owner within
/// 7 days of it the sheet is authorized tacitly. It opens the services it names to the end
/// users of the requesting organisation who hold `end_user_role`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DamSheet {
    pub id: String,
    /// The access matrix whose sources it pools.
    pub instrument: String,
    pub org: Kbo,
    pub objectives: String,
    pub methodology: String,
    /// `data-analyst` or `data-manager`.
    pub end_user_role: String,
    /// The services pooled, each with the fields it gives.
    pub access: Vec<DamAccess>,
    pub purposes: Vec<String>,
    pub valid_until: Date,
    #[serde(default)]
    pub ict_advice: Option<Advice>,
    #[serde(default)]
    pub ssipvp_advice: Option<Advice>,
    /// The day of the SSIPVP's advice (the 7 days run from it).
    #[serde(default)]
    pub advice_date: Option<Date>,
    #[serde(default)]
    pub remark: Option<Step>,
    #[serde(default)]
    pub withdrawn: Option<Step>,
    #[serde(default)]
    pub steps: Vec<Step>,
}

/// One service a DAM sheet pools, with the fields it needs of it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DamAccess {
    pub service: String,
    pub fields: Vec<String>,
}

impl DamSheet {
    /// The day from which the sheet is authorized tacitly, if it can be.
    pub fn approved_from_day(&self) -> Option<i64> {
        let favourable = self.ict_advice.as_ref().is_some_and(|a| a.favourable)
            && self.ssipvp_advice.as_ref().is_some_and(|a| a.favourable);
        if !favourable || self.remark.is_some() || self.withdrawn.is_some() {
            return None;
        }
        self.advice_date.map(|d| d.days() + ExceptionalAccess::REMARK_DAYS)
    }
}

/// The roles a DAM sheet may open (seed 004 §5: "strictement réservé aux analystes de données
/// et aux gestionnaires des données").
pub const DAM_ROLES: [&str; 2] = ["data-analyst", "data-manager"];

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
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub dam_sheets: Vec<DamSheet>,
    /// Network zones the integrator names, for grants' "where".
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub zones: Vec<Zone>,
}
