//! Step 5 — authorize: does the instrument named in `X-Legal-Basis` cover exactly this call?
//! Stands after the envelope (it reads it) and before consent, rate and the body: a request
//! without a covering instrument is refused before anything else is spent on it, and never
//! reaches a source.
//!
//! The decision is the policies crate's allocation-free `decide()` over the snapshot in force;
//! the environment comes from the certificate (`OU=INT|ACC` → test), never from a header.

use std::borrow::Cow;

use certs::{Environment, OrgIdentity};
use policies::model::Env;
use policies::{Decision, DenyCode, Permit, Query, Snapshot};

use super::envelope::Envelope;
use super::route::Route;
use crate::error::{Code, Refusal};

/// The environment a caller's certificate puts it in; production when it names none.
pub fn environment(org: &OrgIdentity) -> Env {
    match org.environment {
        Some(e) if Environment::is_test(e) => Env::Test,
        _ => Env::Production,
    }
}

pub fn authorize(
    snapshot: &Snapshot,
    org: &OrgIdentity,
    peer: std::net::IpAddr,
    route: &Route,
    env: &Envelope<'_>,
    now: i64,
) -> Result<Permit, Refusal> {
    let query = Query {
        caller: org.kbo,
        service: route.service.id,
        legal_basis: env.legal_basis,
        purpose: env.purpose,
        end_user: env.end_user,
        environment: environment(org),
        now,
        certificate: Some(&org.fingerprint),
        peer: Some(peer),
    };
    match snapshot.decide(&query) {
        Decision::Permit(p) => Ok(p),
        Decision::Deny(d) => {
            let code = match d.code {
                DenyCode::NoLegalBasis => Code::NoLegalBasis,
                DenyCode::LegalBasisNotApplicable => Code::LegalBasisNotApplicable,
                DenyCode::AdhesionMissing => Code::AdhesionMissing,
                DenyCode::PurposeNotAllowed => Code::PurposeNotAllowed,
                DenyCode::InstrumentNotActive => Code::InstrumentNotActive,
                DenyCode::FlowSuspended => Code::FlowSuspended,
                DenyCode::EndUserRoleMissing => Code::EndUserRoleMissing,
                DenyCode::ConditionNotMet => Code::AccessConditionNotMet,
                DenyCode::CertificateNotPinned => Code::ClientCertInvalid,
            };
            let suspension = d
                .instrument
                .and_then(|i| snapshot.instrument(i))
                .filter(|_| d.code == DenyCode::FlowSuspended)
                .and_then(|i| i.suspended_reason.as_deref());
            // A refusal caused by another instrument (a parent not in force, a replacing
            // deliberation) names it and its state.
            let detail = match (d.parent.and_then(|p| snapshot.instrument(p)), suspension) {
                (Some(p), _) => Cow::Owned(format!(
                    "{}: '{}' is {}{}",
                    d.reason.message(),
                    p.reference,
                    p.status.as_str(),
                    p.suspended_reason.as_deref().map(|r| format!(" ({r})")).unwrap_or_default()
                )),
                (None, Some(why)) => Cow::Owned(format!("{}: {why}", d.reason.message())),
                (None, None) => Cow::Borrowed(d.reason.message()),
            };
            Err(Refusal::new(code, detail))
        }
    }
}
