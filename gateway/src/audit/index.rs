//! Indexes of the audit trail by subject, by calling organisation and by time, so that the
//! a-posteriori control and the data subject's report do not scan the trail. They live in the
//! store and can always be rebuilt from the trail (the writer catches them up at start).

use std::path::Path;

use super::format::{self, FRAME_OVERHEAD, KIND_RECORD};
use super::record::StoredRecord;

/// Where a record is and what it is indexed by.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IndexEntry {
    pub seq: u64,
    /// First sequence number of the segment holding it.
    pub segment: u64,
    /// Byte offset of its frame in that segment.
    pub offset: u64,
    pub time_ms: u64,
    pub caller: Option<String>,
    /// Subject index keys (`SubjectRef::index_key`).
    pub subjects: Vec<String>,
    /// The record's canonical payload, for an index that keeps the records themselves (the
    /// shared store: see [`AuditIndex::wants_payload`]); `None` otherwise.
    pub payload: Option<Vec<u8>>,
}

/// A record found in a shared index: the chain (replica) it belongs to, and the record.
#[derive(Debug, Clone)]
pub struct SharedRecord {
    pub replica: String,
    pub record: StoredRecord,
}

/// A record's location.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Location {
    pub seq: u64,
    pub segment: u64,
    pub offset: u64,
}

/// What a query selects; times are Unix milliseconds, inclusive.
#[derive(Debug, Clone)]
pub enum Selector {
    Subject(String),
    Caller(String),
    Time,
}

pub trait AuditIndex: Send + Sync + std::fmt::Debug {
    fn audit_index(&self, entries: &[IndexEntry]) -> Result<(), crate::store::StoreError>;
    /// Makes what was indexed so far durable (at shutdown); what is lost otherwise is
    /// re-indexed from the trail at the next start.
    fn audit_flush(&self) -> Result<(), crate::store::StoreError> {
        Ok(())
    }
    /// Does this index keep each record's payload (so that a query on one replica returns
    /// the records of every replica)? The trail fills [`IndexEntry::payload`] only then.
    fn wants_payload(&self) -> bool {
        false
    }
    /// For an index that keeps the records (see [`AuditIndex::wants_payload`]): the records of
    /// every chain matching `selector` between `from_ms` and `to_ms`, in time order, at most
    /// `limit`. `None`: this index only locates records in the local trail
    /// ([`AuditIndex::audit_query`]).
    fn audit_shared(
        &self,
        _selector: &Selector,
        _from_ms: u64,
        _to_ms: u64,
        _limit: usize,
    ) -> Result<Option<Vec<SharedRecord>>, crate::store::StoreError> {
        Ok(None)
    }
    /// How long the indexer gathers records before one update. Each update wakes the indexer
    /// thread, which shares the cores with the calls: a local index takes 10 ms (a few hundred
    /// records at load, and queries wait for the index to catch up anyway); a shared one over the
    /// network may take longer.
    fn batch_window(&self) -> std::time::Duration {
        std::time::Duration::from_millis(10)
    }
    /// The replica whose trail this index is fed from, when several share it.
    fn replica(&self) -> Option<&str> {
        None
    }
    /// The highest sequence number indexed.
    fn audit_indexed_seq(&self) -> Result<u64, crate::store::StoreError>;
    /// Locations of the records matching `selector` between `from_ms` and `to_ms`, in time order,
    /// at most `limit`.
    fn audit_query(
        &self,
        selector: &Selector,
        from_ms: u64,
        to_ms: u64,
        limit: usize,
    ) -> Result<Vec<Location>, crate::store::StoreError>;
}

/// Reads the record at `loc` from the trail in `dir`.
pub fn read_record(dir: &Path, loc: Location) -> Result<StoredRecord, String> {
    use std::os::unix::fs::FileExt as _;
    let path = dir.join(format::segment_name(loc.segment));
    let f = std::fs::File::open(&path).map_err(|e| format!("{}: {e}", path.display()))?;
    let mut head = [0u8; FRAME_OVERHEAD];
    f.read_exact_at(&mut head, loc.offset).map_err(|e| format!("record {}: {e}", loc.seq))?;
    let len = u32::from_le_bytes([head[0], head[1], head[2], head[3]]) as usize;
    if len > format::MAX_PAYLOAD || head[8] != KIND_RECORD {
        return Err(format!("record {}: not a record frame", loc.seq));
    }
    let mut frame = vec![0u8; FRAME_OVERHEAD + len];
    f.read_exact_at(&mut frame, loc.offset).map_err(|e| format!("record {}: {e}", loc.seq))?;
    let (frames, err) = format::decode_frames(&frame, 0);
    let fr = frames.into_iter().next().ok_or_else(|| format!("record {}: damaged ({err:?})", loc.seq))?;
    let r: StoredRecord = serde_json::from_slice(&fr.payload).map_err(|e| format!("record {}: {e}", loc.seq))?;
    if r.seq != loc.seq {
        return Err(format!("record {}: index points at record {}", loc.seq, r.seq));
    }
    Ok(r)
}
