//! The legal model of Passerelle and its decision engine.
//!
//! This crate knows nothing of HTTP, TLS or storage. It holds the identifiers of the Belgian
//! registers ([`ids`]) and — as the policies issue lands — the model of legal instruments, the
//! bundle loader and the allocation-free `decide()` the data plane calls for every request.

pub mod ids;
