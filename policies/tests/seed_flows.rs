//! Table tests for the seed flows: who may, who may not, and with which refusal code.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use policies::bundle;
use policies::ids::Kbo;
use policies::model::Env;
use policies::{Decision, DenyCode, Query, Reason, Snapshot};

fn bundle_files() -> Vec<std::path::PathBuf> {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("bundles");
    let mut v: Vec<_> = std::fs::read_dir(dir).unwrap().map(|e| e.unwrap().path()).collect();
    v.sort();
    v
}

fn snapshot_with(edit: impl Fn(&str, String) -> String) -> Snapshot {
    let texts: Vec<(String, String)> = bundle_files()
        .into_iter()
        .map(|p| {
            let name = p.file_name().unwrap().to_string_lossy().into_owned();
            let text = std::fs::read_to_string(&p).unwrap();
            (name.clone(), edit(&name, text))
        })
        .collect();
    let policy =
        bundle::load_texts(texts.iter().map(|(n, t)| (n.as_str(), t.as_str()))).unwrap_or_else(|e| panic!("{e}"));
    Snapshot::compile(&policy, 1)
}

fn snapshot() -> Snapshot {
    snapshot_with(|_, t| t)
}

/// Unix seconds at noon UTC of `yyyy-mm-dd`.
fn at(date: &str) -> i64 {
    let d = time::Date::parse(date, time::macros::format_description!("[year]-[month]-[day]")).unwrap();
    (i64::from(d.to_julian_day()) - 2_440_588) * 86_400 + 43_200
}

const TODAY: &str = "2026-11-23";

struct Case {
    who: &'static str,
    service: &'static str,
    basis: &'static str,
    purpose: &'static str,
    end_user: Option<&'static str>,
    env: Env,
    when: &'static str,
    expect: Result<(), DenyCode>,
}

const fn case(who: &'static str, service: &'static str, basis: &'static str, purpose: &'static str) -> Case {
    Case { who, service, basis, purpose, end_user: None, env: Env::Production, when: TODAY, expect: Ok(()) }
}

impl Case {
    const fn deny(mut self, code: DenyCode) -> Self {
        self.expect = Err(code);
        self
    }
    const fn env(mut self, env: Env) -> Self {
        self.env = env;
        self
    }
    const fn user(mut self, u: &'static str) -> Self {
        self.end_user = Some(u);
        self
    }
    const fn when(mut self, w: &'static str) -> Self {
        self.when = w;
        self
    }
}

const BANK_A: &str = "0456123494";
const BANK_B: &str = "0456789034";
const INSURER: &str = "0411330181";
const LEASING: &str = "0876543270";
const COMPANY: &str = "0765432146";
const AGENCY_A: &str = "0207123407";
const AGENCY_B: &str = "0208567816";
const MUNICIPALITY: &str = "0207000176";
const SPF_FIN: &str = "0308350231";
const UNKNOWN_ORG: &str = "0403019261";

fn run(snap: &Snapshot, cases: &[Case]) {
    let mut failures = Vec::new();
    for (i, c) in cases.iter().enumerate() {
        let q = Query {
            caller: Kbo::parse(c.who).unwrap(),
            service: c.service,
            legal_basis: c.basis,
            purpose: c.purpose,
            end_user: c.end_user,
            environment: c.env,
            now: at(c.when),
            certificate: None,
            peer: None,
        };
        let got = match snap.decide(&q) {
            Decision::Permit(_) => Ok(()),
            Decision::Deny(d) => Err(d.code),
        };
        if got != c.expect {
            failures.push(format!(
                "case {i}: {} {} {} {} {:?}: expected {:?}, got {:?} ({:?})",
                c.who,
                c.service,
                c.basis,
                c.purpose,
                c.env,
                c.expect,
                got,
                snap.decide(&q)
            ));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn div_conventions() {
    use DenyCode::*;
    let s = snapshot();
    run(
        &s,
        &[
            // The insurer's convention is active: production answers.
            case(INSURER, "div.vehicle", "DIV/CONV/2023/0042", "INSURANCE_CLAIM"),
            case(INSURER, "div.vehicle", "DIV/CONV/2023/0042", "INSURANCE_CLAIM").env(Env::Test),
            // Wrong purpose.
            case(INSURER, "div.vehicle", "DIV/CONV/2023/0042", "MARKETING").deny(PurposeNotAllowed),
            // Before the convention took effect.
            case(INSURER, "div.vehicle", "DIV/CONV/2023/0042", "INSURANCE_CLAIM")
                .when("2023-08-01")
                .deny(InstrumentNotActive),
            // The leasing company's convention is in its test phase: test yes, production no.
            case(LEASING, "div.vehicle", "DIV/CONV/2024/0007", "FLEET_MANAGEMENT").env(Env::Test),
            case(LEASING, "div.vehicle", "DIV/CONV/2024/0007", "FLEET_MANAGEMENT").deny(InstrumentNotActive),
            // Naming another organisation's convention.
            case(LEASING, "div.vehicle", "DIV/CONV/2023/0042", "INSURANCE_CLAIM").deny(LegalBasisNotApplicable),
            // The deliberation alone grants nothing: the convention is the operative instrument.
            case(INSURER, "div.vehicle", "CSI/AF/18/2023", "INSURANCE_CLAIM").deny(LegalBasisNotApplicable),
            // Unknown reference, unknown caller, unknown service.
            case(INSURER, "div.vehicle", "DIV/CONV/9999/0001", "INSURANCE_CLAIM").deny(NoLegalBasis),
            case(UNKNOWN_ORG, "div.vehicle", "DIV/CONV/2023/0042", "INSURANCE_CLAIM").deny(NoLegalBasis),
            case(INSURER, "div.nothing", "DIV/CONV/2023/0042", "INSURANCE_CLAIM").deny(NoLegalBasis),
        ],
    );
}

#[test]
fn div_convention_lifecycle_states() {
    use DenyCode::*;
    for (state, expect) in [
        ("convention-sent", Err(InstrumentNotActive)),
        ("signed-by-beneficiary", Err(InstrumentNotActive)),
        ("published", Ok(())),
        ("terminated", Err(InstrumentNotActive)),
    ] {
        let s = snapshot_with(|name, t| {
            if name == "div.toml" { t.replacen("state = \"active\"", &format!("state = \"{state}\""), 1) } else { t }
        });
        let mut c = case(INSURER, "div.vehicle", "DIV/CONV/2023/0042", "INSURANCE_CLAIM");
        c.expect = expect;
        run(&s, &[c]);
    }
}

#[test]
fn sigedis_adhesions_consent_and_suspension() {
    use DenyCode::*;
    let s = snapshot();
    run(
        &s,
        &[
            case(BANK_A, "sigedis.pensions", "CSI/SSH/19/004/FI", "SUPPLEMENTARY_PENSION_INFO"),
            case(BANK_B, "sigedis.pensions", "CSI/SSH/19/004/FI", "SUPPLEMENTARY_PENSION_INFO"),
            // The framework alone grants nothing; the special authorization does.
            case(BANK_A, "sigedis.pensions", "CSI/SSH/19/004", "SUPPLEMENTARY_PENSION_INFO")
                .deny(LegalBasisNotApplicable),
            // A company is outside the sector; an insurer is not eligible for the FI authorization.
            case(COMPANY, "sigedis.pensions", "CSI/SSH/19/004/FI", "SUPPLEMENTARY_PENSION_INFO")
                .deny(LegalBasisNotApplicable),
            case(INSURER, "sigedis.pensions", "CSI/SSH/19/004/FI", "SUPPLEMENTARY_PENSION_INFO")
                .deny(LegalBasisNotApplicable),
            case(BANK_A, "sigedis.pensions", "CSI/SSH/19/004/FI", "CREDIT_SCORING").deny(PurposeNotAllowed),
        ],
    );
    // Consent is required, and the permit says so.
    let q = Query {
        caller: Kbo::parse(BANK_A).unwrap(),
        service: "sigedis.pensions",
        legal_basis: "CSI/SSH/19/004/FI",
        purpose: "SUPPLEMENTARY_PENSION_INFO",
        end_user: None,
        environment: Env::Production,
        now: at(TODAY),
        certificate: None,
        peer: None,
    };
    let Decision::Permit(p) = s.decide(&q) else { panic!() };
    assert!(p.consent_required);
    assert_eq!(p.fields.count(), 6);
    assert_eq!(s.grant_name(p.grant), Some("sigedis-fi-pensions"));

    // Bank B's adhesion is withdrawn: it is eligible but has not adhered.
    let s = snapshot_with(|name, t| {
        if name == "sigedis.toml" {
            let cut = t.rfind("  [[instruments.adhesions]]").unwrap();
            t[..cut].to_owned()
        } else {
            t
        }
    });
    run(
        &s,
        &[case(BANK_B, "sigedis.pensions", "CSI/SSH/19/004/FI", "SUPPLEMENTARY_PENSION_INFO").deny(AdhesionMissing)],
    );

    // Sigedis suspends its datatransfer: every call gets FLOW_SUSPENDED with the reason.
    let s = snapshot_with(|name, t| {
        if name == "sigedis.toml" {
            t.replace(
                "eligible = [\"financial-institution\"]\nstatus = \"active\"",
                "eligible = [\"financial-institution\"]\nstatus = \"suspended\"\nsuspended_reason = \"Sigedis suspended its datatransfer activities\"",
            )
        } else {
            t
        }
    });
    let Decision::Deny(d) = s.decide(&q) else { panic!("a suspended flow must refuse") };
    assert_eq!(d.code, FlowSuspended);
    assert_eq!(
        s.instrument(d.instrument.unwrap()).unwrap().suspended_reason.as_deref(),
        Some("Sigedis suspended its datatransfer activities")
    );
}

#[test]
fn flemish_statutory_sources_are_for_instances_only() {
    use DenyCode::*;
    let s = snapshot();
    run(
        &s,
        &[
            case(AGENCY_A, "accounts.iban", "VL/DECR-2008-07-18/ART-5-5", "BENEFIT_PAYMENT"),
            case(AGENCY_B, "accounts.iban", "VL/DECR-2008-07-18/ART-5-5", "BENEFIT_PAYMENT"),
            case(AGENCY_B, "contacts.contact", "VL/DECR-2008-07-18/ART-7-4", "CITIZEN_INTERACTION"),
            // One purpose each.
            case(AGENCY_A, "accounts.iban", "VL/DECR-2008-07-18/ART-5-5", "CITIZEN_INTERACTION")
                .deny(PurposeNotAllowed),
            // The article of one source does not open the other.
            case(AGENCY_A, "contacts.contact", "VL/DECR-2008-07-18/ART-5-5", "CITIZEN_INTERACTION")
                .deny(LegalBasisNotApplicable),
            // Not a Flemish instance.
            case(BANK_A, "accounts.iban", "VL/DECR-2008-07-18/ART-5-5", "BENEFIT_PAYMENT")
                .deny(LegalBasisNotApplicable),
            case(MUNICIPALITY, "contacts.contact", "VL/DECR-2008-07-18/ART-7-4", "CITIZEN_INTERACTION")
                .deny(LegalBasisNotApplicable),
            // The association protocol: agency A only, within its validity.
            case(AGENCY_A, "associations.association", "VL/PROT/2022/017", "SUBSIDY_HANDLING"),
            case(AGENCY_B, "associations.association", "VL/PROT/2022/017", "SUBSIDY_HANDLING")
                .deny(LegalBasisNotApplicable),
            case(AGENCY_A, "associations.association", "VL/PROT/2022/017", "SUBSIDY_HANDLING")
                .when("2027-04-01")
                .deny(InstrumentNotActive),
        ],
    );
}

#[test]
fn lra_roles_have_a_validity() {
    use DenyCode::*;
    let s = snapshot();
    let lra = |u: Option<&'static str>| {
        let c = case(MUNICIPALITY, "rn.person", "BOSA/LRA/2024", "LRA_REGISTRATION");
        match u {
            Some(u) => c.user(u),
            None => c,
        }
    };
    run(
        &s,
        &[
            lra(Some("lra-officer-1")),
            // No end user named, an unknown one, one whose role expired.
            lra(None).deny(EndUserRoleMissing),
            lra(Some("somebody")).deny(EndUserRoleMissing),
            lra(Some("lra-officer-2")).deny(EndUserRoleMissing),
            // Officer 1's role ends on 2027-06-30: valid that day, refused the next.
            lra(Some("lra-officer-1")).when("2027-06-30"),
            lra(Some("lra-officer-1")).when("2027-07-01").deny(EndUserRoleMissing),
        ],
    );
    let q = Query {
        caller: Kbo::parse(MUNICIPALITY).unwrap(),
        service: "rn.person",
        legal_basis: "BOSA/LRA/2024",
        purpose: "LRA_REGISTRATION",
        end_user: Some("lra-officer-2"),
        environment: Env::Production,
        now: at(TODAY),
        certificate: None,
        peer: None,
    };
    let Decision::Deny(d) = s.decide(&q) else { panic!() };
    assert_eq!(d.reason, Reason::RoleExpired);
    // A spoofed end user header does not help another organisation.
    let q = Query { caller: Kbo::parse(AGENCY_A).unwrap(), end_user: Some("lra-officer-1"), ..q };
    assert!(matches!(s.decide(&q), Decision::Deny(d) if d.code == DenyCode::LegalBasisNotApplicable));
}

#[test]
fn access_matrix_and_exceptional_access() {
    use DenyCode::*;
    let s = snapshot();
    let fin = |purpose, user| case(SPF_FIN, "patrimony.property", "SPF-FIN/MATRIX/2017", purpose).user(user);
    run(
        &s,
        &[
            fin("TAX_ASSESSMENT", "inspector-12"),
            fin("TAX_ASSESSMENT", "analyst-7").deny(EndUserRoleMissing),
            // The exceptional access is tacitly approved 7 days after the 2026-11-02 advice.
            fin("FRAUD_INVESTIGATION", "analyst-7"),
            fin("FRAUD_INVESTIGATION", "analyst-7").when("2026-11-08").deny(InstrumentNotActive),
            fin("FRAUD_INVESTIGATION", "analyst-7").when("2026-11-09"),
            fin("FRAUD_INVESTIGATION", "inspector-12").deny(EndUserRoleMissing),
            fin("FRAUD_INVESTIGATION", "analyst-7").when("2027-01-01").deny(InstrumentNotActive),
        ],
    );
    // A remark within the 7 days: never approved.
    let s = snapshot_with(|n, t| {
        if n == "spf-finances.toml" {
            t.replace("advice_date = 2026-11-02\n", "advice_date = 2026-11-02\nremark = true\n")
        } else {
            t
        }
    });
    run(&s, &[fin("FRAUD_INVESTIGATION", "analyst-7").deny(PurposeNotAllowed)]);
}

#[test]
fn permit_carries_the_field_mask_of_the_grant() {
    let s = snapshot();
    let q = Query {
        caller: Kbo::parse(INSURER).unwrap(),
        service: "div.vehicle",
        legal_basis: "DIV/CONV/2023/0042",
        purpose: "INSURANCE_CLAIM",
        end_user: None,
        environment: Env::Production,
        now: at(TODAY),
        certificate: None,
        peer: None,
    };
    let Decision::Permit(p) = s.decide(&q) else { panic!() };
    let fields: Vec<&str> = s.field_names(p.service, p.fields).collect();
    assert_eq!(fields, ["plate", "vin", "make", "model", "firstRegistrationDate", "holderId", "holderName", "insurer"]);
    assert!(!p.consent_required);
    let rate = p.rate.unwrap();
    assert_eq!((rate.max, rate.period_secs), (50_000, 86_400));
}
