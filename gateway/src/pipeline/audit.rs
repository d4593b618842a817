//! Step 11 — audit: the call's record is appended to the hash-chained trail and the response
//! waits until it is durable.
//!
//! NOT BUILT YET (issue "The audit trail"). Until then no record is written, so the gateway
//! gives none of the accountability DOMAIN.md §7 requires and must not carry production data.
