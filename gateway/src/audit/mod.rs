//! The audit trail: every access and every attempt, durable before the answer, tamper-evident.
//!
//! * [`record`]: what a record holds and its canonical bytes.
//! * [`format`]: segments, frames, the hash chain and checkpoints on disk
//!   (`docs/audit-format.md` is the normative description).
//! * [`trail`]: the writer — group commit, fail-closed, recovery at start.
//! * [`durable`]: how a batch becomes durable in the segment (direct, synchronous writes).
//! * [`index`]: indexes by subject, caller and time, in the store.
//! * [`verify`]: `passerelle audit verify` and `export`.
//! * [`attempts`]: refused TLS handshakes, aggregated per second into records.

pub mod attempts;
mod durable;
pub mod format;
pub mod generate;
pub mod index;
pub mod record;
mod spare;
pub mod trail;
pub mod verify;

use std::sync::Arc;
use std::time::Duration;

pub use record::{Outcome, Record, RecordKind, SubjectRef};
pub use trail::{AuditError, AuditTrail, Coming, Recovery, TrailConfig};

use crate::config::AuditConfig;

/// Opens the trail described by the config, indexing into `index`.
pub fn open(cfg: &AuditConfig, index: Arc<dyn index::AuditIndex>) -> Result<(AuditTrail, Recovery), AuditError> {
    AuditTrail::open(
        TrailConfig {
            dir: cfg.dir.clone(),
            signing_key: cfg.signing_key.clone(),
            segment_bytes: cfg.segment_bytes,
            checkpoint_every: cfg.checkpoint_every,
            checkpoint_interval: Duration::from_millis(cfg.checkpoint_interval_ms),
            max_batch: cfg.max_batch,
        },
        index,
    )
}
