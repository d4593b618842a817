//! Step 6 — consent: when the grant rests on the data subject's consent, a valid consent must
//! be on file. Stands right after authorize, which says whether consent is required.
//!
//! NOT BUILT YET (issue "Consent registry"): there is no registry, so no consent can be on
//! file, and every consent-based call is refused with `CONSENT_MISSING`. That is the correct
//! deny-by-default answer, not a placeholder that lets calls through.

use policies::Permit;

use crate::error::{Code, Refusal};

pub fn check(permit: &Permit) -> Result<(), Refusal> {
    if permit.consent_required {
        return Err(Refusal::new(
            Code::ConsentMissing,
            "this flow rests on the data subject's consent and none is on file for this recipient and purpose",
        ));
    }
    Ok(())
}
