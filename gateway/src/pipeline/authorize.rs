//! Step 5 — authorize: is there a legal instrument that covers exactly this call?
//!
//! NOT BUILT YET (issue "Legal model and the allocation-free decision engine"). Until the
//! decision engine lands, this step only insists that the envelope names an instrument and a
//! purpose (the envelope step has checked both are present) and lets the call through. That is
//! *not* deny-by-default: no deployment may carry personal data before this step is filled.
