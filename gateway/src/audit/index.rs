//! Indexes of the audit trail by subject, by calling organisation and by time, so that the
//! a-posteriori control and the data subject's report do not scan the trail. They live in the
//! store and can always be rebuilt from the trail (the writer catches them up at start).

use std::path::Path;

use super::format::{self, FRAME_OVERHEAD, KIND_RECORD};
use super::record::{StoredRecord, SubjectKind};

/// Where a record is and what it is indexed by.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IndexEntry {
    pub seq: u64,
    /// First sequence number of the segment holding it.
    pub segment: u64,
    /// Byte offset of its frame in that segment.
    pub offset: u64,
    pub time_ms: u64,
    /// The calling organisation and the subjects it is filed under.
    pub keys: Keys,
    /// The record's canonical payload, for an index that keeps the records themselves (the
    /// shared store: see [`AuditIndex::wants_payload`]); `None` otherwise.
    pub payload: Option<Vec<u8>>,
}

/// The keys a record is filed under: the calling organisation's number and each subject's
/// index key (`SubjectRef::index_key`: a type letter and the identifier), held in one buffer
/// from `from` on, each as a 4-byte length and its bytes, the caller first (its length
/// `u32::MAX` when there is none).
///
/// The buffer of a data call's record is the one its canonical bytes were written in
/// ([`Outgoing`]): the call allocates once for both, and the keys reach the indexer without
/// another copy.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Keys {
    buf: Vec<u8>,
    from: usize,
}

const NO_CALLER: u32 = u32::MAX;

impl Keys {
    pub fn new<'a>(caller: Option<&str>, subjects: impl Iterator<Item = (SubjectKind, &'a str)>) -> Keys {
        let mut buf = Vec::new();
        Keys::push(&mut buf, caller, subjects);
        Keys { buf, from: 0 }
    }

    /// Appends the keys' encoding to `buf`.
    pub(crate) fn push<'a>(
        buf: &mut Vec<u8>,
        caller: Option<&str>,
        subjects: impl Iterator<Item = (SubjectKind, &'a str)>,
    ) {
        let len = |n: usize| u32::try_from(n).unwrap_or(NO_CALLER - 1).to_le_bytes();
        match caller {
            Some(c) => {
                buf.extend_from_slice(&len(c.len()));
                buf.extend_from_slice(c.as_bytes());
            }
            None => buf.extend_from_slice(&NO_CALLER.to_le_bytes()),
        }
        for (kind, id) in subjects {
            buf.extend_from_slice(&len(1 + id.len()));
            buf.push(kind.letter());
            buf.extend_from_slice(id.as_bytes());
        }
    }

    /// Each key in turn, the caller's first (`None` when there is none).
    fn each(&self) -> impl Iterator<Item = Option<&str>> {
        let mut rest = self.buf.get(self.from..).unwrap_or_default();
        std::iter::from_fn(move || {
            let (head, tail) = rest.split_first_chunk::<4>()?;
            let n = u32::from_le_bytes(*head);
            if n == NO_CALLER {
                rest = tail;
                return Some(None);
            }
            let (key, tail) = tail.split_at_checked(n as usize)?;
            rest = tail;
            // Written from `&str`s, a type letter before each subject's.
            Some(Some(std::str::from_utf8(key).unwrap_or_default()))
        })
    }

    /// The calling organisation's number.
    pub fn caller(&self) -> Option<&str> {
        self.each().next().flatten()
    }

    /// The subjects' index keys, in the record's order.
    pub fn subjects(&self) -> impl Iterator<Item = &str> {
        self.each().skip(1).flatten()
    }
}

/// A record on its way to the writer: its canonical bytes without the sequence number, and
/// after them, in the same buffer, the [`Keys`] the index files it under.
#[derive(Debug, Default)]
pub struct Outgoing {
    pub(crate) buf: Vec<u8>,
    /// Where the canonical bytes end.
    pub(crate) record: usize,
    pub(crate) time_ms: u64,
}

impl Outgoing {
    /// The canonical bytes, `{"kind":…}`.
    pub fn canonical(&self) -> &[u8] {
        &self.buf[..self.record]
    }

    /// The keys, in the buffer that held the record too.
    pub fn into_keys(self) -> Keys {
        Keys { buf: self.buf, from: self.record }
    }
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

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use crate::audit::record::{Outcome, Record, RecordKind, SubjectRef};

    #[test]
    fn keys_give_back_the_caller_and_the_subjects_in_order() {
        let subjects = [(SubjectKind::Person, "85073003328"), (SubjectKind::Association, "V0001001")];
        let k = Keys::new(Some("0207123407"), subjects.into_iter());
        assert_eq!(k.caller(), Some("0207123407"));
        assert_eq!(k.subjects().collect::<Vec<_>>(), ["P85073003328", "AV0001001"]);
        let none = Keys::new(None, [(SubjectKind::Organisation, "0403019261")].into_iter());
        assert_eq!(none.caller(), None);
        assert_eq!(none.subjects().collect::<Vec<_>>(), ["O0403019261"]);
        let empty = Keys::new(None, std::iter::empty());
        assert_eq!((empty.caller(), empty.subjects().count()), (None, 0));
        // An empty key is a key.
        let blank = Keys::new(Some(""), [(SubjectKind::Person, "")].into_iter());
        assert_eq!((blank.caller(), blank.subjects().collect::<Vec<_>>()), (Some(""), vec!["P"]));
    }

    #[test]
    fn an_outgoing_record_holds_its_canonical_bytes_then_its_keys() {
        let mut r = Record::control(RecordKind::DataCall, 7, "r-1".into(), Some("0207123407".into()), None, "GET /x");
        r.subjects = vec![SubjectRef::Person("85073003328".into()), SubjectRef::Organisation("0403019261".into())];
        r.outcome = Outcome::Refused;
        let out = r.view().outgoing();
        assert_eq!(out.canonical(), &r.canonical_without_seq()[..]);
        assert_eq!(out.time_ms, 7);
        let keys = out.into_keys();
        assert_eq!(keys.caller(), Some("0207123407"));
        let expected: Vec<String> = r.subjects.iter().map(SubjectRef::index_key).collect();
        assert_eq!(keys.subjects().collect::<Vec<_>>(), expected);
    }
}
