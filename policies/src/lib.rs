//! The legal model of Passerelle and its decision engine.
//!
//! * [`ids`]: the identifiers of the Belgian registers (NISS/BIS, enterprise number, IBAN,
//!   plate, VIN, vCode), parsed into valid-by-construction types.
//! * [`model`]: organisations, sources, services and the legal instruments of DOMAIN.md §2 —
//!   deliberations, general instruments with adhesions, protocols (13 elements), conventions
//!   with their lifecycle, statutory bases, access matrices with roles and exceptional access.
//! * [`bundle`]: loads and validates TOML bundles, with errors naming file and key.
//! * [`compiled`]: the immutable, indexed [`Snapshot`] the data plane reads.
//! * [`decide`]: `Snapshot::decide(&Query) -> Decision`, deny by default, allocation-free.
//!
//! This crate knows nothing of HTTP, TLS or storage.

#![forbid(unsafe_code)]

pub mod bundle;
pub mod compiled;
pub mod conditions;
pub mod decide;
pub mod ids;
pub mod lifecycle;
pub mod model;
pub mod seed;
pub mod synthetic;

pub use compiled::Snapshot;
pub use decide::{Decision, Deny, DenyCode, Permit, Query, Reason};
