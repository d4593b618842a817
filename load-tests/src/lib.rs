//! The mTLS load generator and the side-by-side comparison with nginx.
//!
//! NOT BUILT YET: this crate is the performance issue's. It will drive the gateway with
//! [`gateway::client`]'s mTLS client in closed- and open-loop modes and report latency
//! percentiles and CPU µs per request.
