//! Passerelle, the gateway: the data plane (mTLS reverse proxy with the request pipeline), its
//! configuration, the store, the CLI and the demo. `main.rs` only parses the command line and
//! calls [`cli::run`].
//!
//! See `ARCHITECTURE.md` at the repository root for how a request flows.

pub mod activity;
pub mod admin;
pub mod audit;
mod background;
pub mod cli;
pub mod client;
pub mod config;
pub mod conn;
pub mod consent;
pub mod console;
pub mod demo;
pub mod error;
pub mod metrics;
pub mod ops;
pub mod pipeline;
pub mod policy;
pub mod public;
pub mod publication;
pub mod registered;
pub mod reload;
pub mod server;
pub mod store;
pub mod timer;
pub mod tls;
