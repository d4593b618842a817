//! The mTLS load generator (`passerelle-load`): drives a TLS reverse proxy — Passerelle, or
//! nginx for the comparison — with client certificates, and reports throughput, latency
//! percentiles, answers by status and refusal code, and the CPU time a target process spent
//! per request (from `/proc`), the main figure on a small machine.
//!
//! Three modes:
//! * **closed** loop: N keep-alive connections, each sending its next request when the last
//!   one is answered, for a duration;
//! * **open** loop: a fixed total rate spread over N connections; every request has a scheduled
//!   start, and its latency is measured from that schedule, so a stalled server cannot hide its
//!   tail by slowing the generator down (coordinated omission); a pacing task on a timerfd
//!   wakes each connection at its time, or with `--tick-us` at most once a tick for every
//!   call then due (never early; the wait is counted);
//! * **handshake**: every request on a new connection with a full TLS handshake (session
//!   resumption off), to measure handshake cost.
//!
//! The requests come from a mix file (TOML): services, headers, bodies, weights, and what each
//! should get back, so that a share of intended refusals can be part of the load.

pub mod cpu;
pub mod mix;
pub mod run;
