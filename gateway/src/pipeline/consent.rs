//! Step 6 — consent: when the grant rests on the data subject's consent, a valid consent must
//! be on file. Stands right after authorize, which says whether consent is required, and
//! before the body is read or the source called.
//!
//! The check reads the registry's in-memory index (allocation-free, no disk). A revocation is
//! acknowledged only once the index holds it, so the next request after the acknowledgement
//! is refused.

use certs::OrgIdentity;
use policies::model::RevalidationRule;
use policies::{Permit, Snapshot};

use super::envelope::{Envelope, Subject};
use crate::consent::{ConsentId, Denial, Registry};
use crate::error::{Code, Refusal};

pub fn check(
    registry: &Registry,
    snapshot: &Snapshot,
    permit: &Permit,
    org: &OrgIdentity,
    service: &str,
    env: &Envelope<'_>,
    now_ms: u64,
) -> Result<Option<ConsentId>, Refusal> {
    if !permit.consent_required {
        return Ok(None);
    }
    let Some(Subject::Person(niss)) = env.subject else {
        return Err(Refusal::new(
            Code::ConsentMissing,
            "this flow rests on a person's consent: name the person in X-Subject",
        ));
    };
    let kind = snapshot.organisation(org.kbo).map(|o| o.kind);
    // The source's rule "stop": a consent not re-validated in time no longer serves. The
    // permit names the service by index: no lookup by name on the request path.
    let revalidate_days = snapshot
        .service_info(permit.service)
        .and_then(|s| s.revalidation)
        .filter(|r| r.rule == RevalidationRule::Stop)
        .map(|r| r.days);
    match registry.check(niss, org.kbo, kind, service, env.purpose, now_ms, revalidate_days) {
        Ok(id) => Ok(Some(id)),
        Err(Denial::Missing) => Err(Refusal::new(
            Code::ConsentMissing,
            "this flow rests on the data subject's consent and none is on file for this recipient and purpose",
        )),
        Err(Denial::Revoked) => Err(Refusal::new(Code::ConsentRevoked, "the data subject revoked the consent")),
        Err(Denial::Expired) => Err(Refusal::new(Code::ConsentExpired, "the data subject's consent has expired")),
        Err(Denial::RevalidationDue) => Err(Refusal::new(
            Code::ConsentRevalidationDue,
            "the data subject has not re-validated the consent within the period the source sets; the source stops using it until the citizen does",
        )),
    }
}
