//! `passerelle audit verify` and `passerelle audit export`: check a trail directory end to end,
//! and write records with their hashes and the checkpoints as JSON lines for archiving and for
//! verification outside the project (docs/audit-format.md).

use std::io::Write;
use std::path::Path;

use ring::signature::{ED25519, UnparsedPublicKey};

use super::format::{self, Checkpoint, HEADER_LEN, KIND_RECORD};
use super::trail::{StoredCheckpoint, check_checkpoint_chain, payload_seq, read_checkpoints};

/// The outcome of a verification.
#[derive(Debug, Default)]
pub struct Report {
    pub segments: usize,
    pub records: u64,
    pub first_seq: u64,
    pub last_seq: u64,
    pub checkpoints: usize,
    /// The last record a checkpoint seals.
    pub sealed_to: u64,
    /// Records after the last checkpoint: intact, but nothing signed vouches for them yet.
    pub unsealed: u64,
    /// The first problem found, naming the record; `None` when the trail verifies.
    pub problem: Option<String>,
}

fn hex32(s: &str) -> Option<[u8; 32]> {
    format::unhex(s)?.try_into().ok()
}

/// Checks a checkpoint's signature with the pinned `key` (never with the key it names).
pub fn checkpoint_signature_ok(cp: &Checkpoint, key: &[u8; 32]) -> bool {
    let (Some(hash), Some(sig)) = (hex32(&cp.hash), format::unhex(&cp.signature)) else {
        return false;
    };
    let message = match cp.prev.as_deref() {
        Some(prev) => match hex32(prev) {
            Some(prev) => format::checkpoint_message_v2(cp.seq, &hash, cp.time_ms, &prev),
            None => return false,
        },
        None => format::checkpoint_message(cp.seq, &hash, cp.time_ms),
    };
    UnparsedPublicKey::new(&ED25519, key).verify(&message, &sig).is_ok()
}

/// Verifies every segment of `dir` against the pinned `public_key`: headers and their
/// continuity, frame checksums, sequence numbers, the hash chain; every byte of
/// `checkpoints.log` (an unreadable one is a problem, never an end of input), the checkpoint
/// chain, each checkpoint's signature and its hash at its record, no checkpoint beyond the end
/// of the trail, and every record of a segment other than the last sealed by a checkpoint
/// (the gateway writes one whenever it starts a segment). Records after the last checkpoint
/// are counted in [`Report::unsealed`].
pub fn verify_dir(dir: &Path, public_key: &[u8; 32]) -> Result<Report, String> {
    let segs = format::segments(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    let mut report = Report { segments: segs.len(), ..Report::default() };
    let fail = |mut r: Report, msg: String| {
        r.problem = Some(msg);
        Ok(r)
    };
    let stored: Vec<StoredCheckpoint> = match read_checkpoints(dir) {
        Ok(c) => c,
        Err(problem) => return fail(report, problem),
    };
    if let Err(problem) = check_checkpoint_chain(&stored) {
        return fail(report, problem);
    }
    let cps: Vec<&Checkpoint> = stored.iter().map(|c| &c.cp).collect();
    report.checkpoints = cps.len();
    report.sealed_to = cps.iter().map(|c| c.seq).max().unwrap_or(0);
    let mut hashes: std::collections::HashMap<u64, [u8; 32]> = cps.iter().map(|c| (c.seq, [0; 32])).collect();
    let mut last_of_segment: Vec<(String, u64)> = Vec::new();
    let mut expected_seq: Option<u64> = None;
    let mut prev_hash: Option<[u8; 32]> = None;
    for (first, path) in &segs {
        let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("?").to_owned();
        let data = format::read_all(path).map_err(|e| format!("{name}: {e}"))?;
        let Some(header) = format::decode_header(&data) else {
            return fail(report, format!("{name}: the segment header is damaged"));
        };
        if header.first_seq != *first {
            return fail(report, format!("{name}: the header says it starts at record {}", header.first_seq));
        }
        match (expected_seq, prev_hash) {
            (None, _) => report.first_seq = *first,
            (Some(e), Some(h)) => {
                if *first != e {
                    return fail(report, format!("{name}: records {e} to {} are missing", first.saturating_sub(1)));
                }
                if header.prev_hash != h {
                    return fail(report, format!("{name}: its header does not continue the chain of record {}", e - 1));
                }
            }
            (Some(_), None) => {}
        }
        let mut hash = header.prev_hash;
        let mut seq = *first;
        let (frames, stop) = format::decode_frames(&data, HEADER_LEN);
        for f in &frames {
            let got = payload_seq(&f.payload);
            if f.kind != KIND_RECORD {
                return fail(report, format!("record {seq} ({name}, offset {}): not a record frame", f.offset));
            }
            match got {
                Some(g) if g == seq => {}
                Some(g) if g > seq => {
                    return fail(
                        report,
                        format!("record {seq} ({name}, offset {}): missing; found record {g}", f.offset),
                    );
                }
                Some(g) => {
                    return fail(
                        report,
                        format!("record {seq} ({name}, offset {}): out of order; found record {g}", f.offset),
                    );
                }
                None => return fail(report, format!("record {seq} ({name}, offset {}): unreadable", f.offset)),
            }
            let h = format::chain(&hash, &f.payload);
            if h != f.hash {
                return fail(report, format!("record {seq} ({name}, offset {}): altered (hash mismatch)", f.offset));
            }
            if let Some(slot) = hashes.get_mut(&seq) {
                *slot = h;
            }
            hash = h;
            report.records += 1;
            report.last_seq = seq;
            seq += 1;
        }
        if let Some(stop) = stop {
            return fail(
                report,
                format!(
                    "record {seq} ({name}, offset {}): {}",
                    stop.offset(),
                    match stop {
                        format::FrameError::Truncated { .. } => "cut short",
                        format::FrameError::Corrupt { .. } => "damaged (checksum mismatch)",
                    }
                ),
            );
        }
        expected_seq = Some(seq);
        prev_hash = Some(hash);
        last_of_segment.push((name, seq - 1));
    }
    let first_retained = report.first_seq;
    for cp in cps.iter().copied() {
        if !checkpoint_signature_ok(cp, public_key) {
            return fail(report, format!("checkpoint at record {}: bad signature", cp.seq));
        }
        if cp.seq > report.last_seq {
            let msg =
                format!("checkpoint at record {} but the trail ends at record {}: truncated", cp.seq, report.last_seq);
            return fail(report, msg);
        }
        if cp.seq < first_retained {
            continue; // pruned past this checkpoint
        }
        if hashes.get(&cp.seq).map(|h| format::hex(h)) != Some(cp.hash.clone()) {
            return fail(report, format!("checkpoint at record {}: the chain does not match it", cp.seq));
        }
    }
    // A checkpoint is written whenever a segment starts: a closed segment is always sealed.
    if let Some((_, closed)) = last_of_segment.split_last() {
        for (name, last) in closed {
            if *last >= first_retained && *last > report.sealed_to {
                let msg =
                    format!("{name}: its records up to {last} are sealed by no checkpoint (checkpoints were removed)");
                return fail(report, msg);
            }
        }
    }
    report.unsealed = report.last_seq.saturating_sub(report.sealed_to.max(first_retained.saturating_sub(1)));
    Ok(report)
}

/// What an export selects.
#[derive(Debug, Clone, Copy)]
pub enum Selection {
    /// Records by sequence number, inclusive; `None` at the end: the last sealed record.
    Seq { from: u64, to: Option<u64> },
    /// Records whose `time_ms` lies in `[from_ms, to_ms]`; `time_ms` is not monotonic in
    /// `seq`, so this is translated to the smallest and largest such sequence numbers, and
    /// every record between them is exported.
    Time { from_ms: u64, to_ms: u64 },
}

/// One record as the trail holds it, for exports.
struct Held {
    seq: u64,
    prev: [u8; 32],
    hash: [u8; 32],
    payload: Vec<u8>,
    time_ms: u64,
}

fn held_records(dir: &Path) -> Result<Vec<Held>, String> {
    let mut out = Vec::new();
    for (_, path) in format::segments(dir).map_err(|e| e.to_string())? {
        let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("?").to_owned();
        let data = format::read_all(&path).map_err(|e| format!("{name}: {e}"))?;
        let header = format::decode_header(&data).ok_or_else(|| format!("{name}: the segment header is damaged"))?;
        let (frames, stop) = format::decode_frames(&data, HEADER_LEN);
        if let Some(stop) = stop {
            return Err(format!("{name}, offset {}: damaged; run `passerelle audit verify`", stop.offset()));
        }
        let mut prev = header.prev_hash;
        for f in frames {
            let seq =
                payload_seq(&f.payload).ok_or_else(|| format!("{name}, offset {}: unreadable record", f.offset))?;
            let time_ms = serde_json::from_slice::<serde_json::Value>(&f.payload)
                .ok()
                .and_then(|v| v["time_ms"].as_u64())
                .unwrap_or(0);
            out.push(Held { seq, prev, hash: f.hash, payload: f.payload, time_ms });
            prev = f.hash;
        }
    }
    Ok(out)
}

fn checkpoint_line(kind: &str, cp: &Checkpoint) -> Result<serde_json::Value, String> {
    let mut v = serde_json::to_value(cp).map_err(|e| e.to_string())?;
    v["type"] = kind.into();
    Ok(v)
}

/// Writes an export that proves itself (docs/audit-format.md §8): a header naming the selected
/// sequence range, the last checkpoint before it (the anchor; none when the range starts at
/// record 1), every record from just after the anchor to the first checkpoint at or after the
/// range's end (the seal) — those outside the selection marked `"in_range":false`, because
/// the chain cannot link the range to signed checkpoints without them — and the seal.
/// Returns the number of records selected.
pub fn export(dir: &Path, selection: Selection, out: &mut dyn Write) -> Result<u64, String> {
    let records = held_records(dir)?;
    let cps: Vec<Checkpoint> = read_checkpoints(dir)?.into_iter().map(|c| c.cp).collect();
    let sealed_to = cps.iter().map(|c| c.seq).max().unwrap_or(0);
    let (lo, hi, time) = match selection {
        Selection::Seq { from, to } => (from.max(1), to.unwrap_or(sealed_to), None),
        Selection::Time { from_ms, to_ms } => {
            let inside = records.iter().filter(|r| (from_ms..=to_ms).contains(&r.time_ms)).map(|r| r.seq);
            let (lo, hi) = inside.fold((u64::MAX, 0), |(lo, hi), s| (lo.min(s), hi.max(s)));
            (lo, hi, Some((from_ms, to_ms)))
        }
    };
    let write = |out: &mut dyn Write, v: serde_json::Value| writeln!(out, "{v}").map_err(|e| e.to_string());
    let header = |lo: Option<u64>, hi: Option<u64>| {
        serde_json::json!({
            "type": "export", "version": 2, "from_seq": lo, "to_seq": hi,
            "from_ms": time.map(|t: (u64, u64)| t.0), "to_ms": time.map(|t: (u64, u64)| t.1),
        })
    };
    if lo > hi {
        write(out, header(None, None))?;
        return Ok(0);
    }
    let Some(seal) = cps.iter().filter(|c| c.seq >= hi).min_by_key(|c| c.seq) else {
        return Err(format!(
            "records up to {hi} are not sealed by a checkpoint yet (the last seals record {sealed_to}); export them after the next checkpoint"
        ));
    };
    let anchor = cps.iter().filter(|c| c.seq < lo).max_by_key(|c| c.seq);
    let start = anchor.map_or(1, |a| a.seq + 1);
    let first_held = records.first().map_or(1, |r| r.seq);
    if start < first_held {
        return Err(format!(
            "no checkpoint between the oldest retained record ({first_held}) and record {lo}: the export cannot be anchored"
        ));
    }
    write(out, header(Some(lo), Some(hi)))?;
    if let Some(a) = anchor {
        write(out, checkpoint_line("anchor", a)?)?;
    }
    for r in records.iter().filter(|r| (start..=seal.seq).contains(&r.seq)) {
        let text = std::str::from_utf8(&r.payload).map_err(|e| format!("record {}: {e}", r.seq))?;
        write(
            out,
            serde_json::json!({
                "type": "record",
                "seq": r.seq,
                "in_range": (lo..=hi).contains(&r.seq),
                "prev_hash": format::hex(&r.prev),
                "hash": format::hex(&r.hash),
                "canonical": text,
            }),
        )?;
    }
    write(out, checkpoint_line("seal", seal)?)?;
    Ok(hi - lo + 1)
}

/// What [`verify_export`] found in one chain's section of an export.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct ExportReport {
    pub replica: Option<String>,
    pub from_seq: u64,
    pub to_seq: u64,
    pub context: u64,
    pub anchor: Option<u64>,
    pub seal: u64,
}

/// One chain's section of an export, while it is read.
struct Section {
    report: ExportReport,
    /// The hash the next record must continue from (the anchor's, or the last record's).
    last_hash: Option<[u8; 32]>,
    next_seq: u64,
    range: Option<(u64, u64)>,
}

/// Verifies an export from its lines alone, with the pinned key: for each chain, the anchor
/// checkpoint's signature (or the genesis hash when the records start at 1), every record's
/// `hash = SHA-256(prev_hash ‖ canonical)` and its link to the line before, its `seq`, the
/// seal's signature and that it seals the last record, and that the records marked in range
/// are exactly the header's range. The first problem is returned with its line number.
pub fn verify_export(text: &str, key: &[u8; 32]) -> Result<Vec<ExportReport>, String> {
    let mut reports = Vec::new();
    let mut cur: Option<Section> = None;
    let mut replica: Option<String> = None;
    let finish = |cur: &mut Option<Section>, reports: &mut Vec<ExportReport>, line: usize| -> Result<(), String> {
        if let Some(sec) = cur.take() {
            if sec.range.is_some() && sec.report.seal == 0 {
                return Err(format!("line {line}: the export ends without its seal"));
            }
            reports.push(sec.report);
        }
        Ok(())
    };
    let mut n = 0;
    for (i, raw) in text.lines().enumerate() {
        n = i + 1;
        let at = |m: String| format!("line {n}: {m}");
        let v: serde_json::Value = serde_json::from_str(raw).map_err(|e| at(format!("not JSON: {e}")))?;
        match v["type"].as_str() {
            Some("chain") => {
                finish(&mut cur, &mut reports, n)?;
                replica = v["replica"].as_str().map(str::to_owned);
            }
            Some("export") => {
                finish(&mut cur, &mut reports, n)?;
                let range = match (v["from_seq"].as_u64(), v["to_seq"].as_u64()) {
                    (Some(a), Some(b)) if a <= b => Some((a, b)),
                    (None, None) => None,
                    _ => return Err(at("from_seq and to_seq must be a range".into())),
                };
                let (from_seq, to_seq) = range.unwrap_or((0, 0));
                let report = ExportReport { replica: replica.clone(), from_seq, to_seq, ..ExportReport::default() };
                cur = Some(Section { report, last_hash: None, next_seq: 0, range });
            }
            Some(kind @ ("anchor" | "seal")) => {
                let Some(Section { report: r, last_hash, next_seq, .. }) = cur.as_mut() else {
                    return Err(at("a checkpoint before the export's header".into()));
                };
                let cp: Checkpoint =
                    serde_json::from_value(v.clone()).map_err(|e| at(format!("bad checkpoint: {e}")))?;
                if !checkpoint_signature_ok(&cp, key) {
                    return Err(at(format!("{kind} checkpoint at record {}: bad signature", cp.seq)));
                }
                let hash = hex32(&cp.hash).ok_or_else(|| at("bad checkpoint hash".into()))?;
                if kind == "anchor" {
                    if last_hash.is_some() || r.anchor.is_some() {
                        return Err(at("the anchor must come before the records".into()));
                    }
                    r.anchor = Some(cp.seq);
                    *last_hash = Some(hash);
                    *next_seq = cp.seq + 1;
                } else {
                    if *next_seq == 0 || cp.seq + 1 != *next_seq || *last_hash != Some(hash) {
                        return Err(at(format!(
                            "the seal at record {} does not seal the last record exported",
                            cp.seq
                        )));
                    }
                    r.seal = cp.seq;
                }
            }
            Some("record") => {
                let Some(Section { report: r, last_hash, next_seq, range }) = cur.as_mut() else {
                    return Err(at("a record before the export's header".into()));
                };
                if r.seal != 0 {
                    return Err(at("a record after the seal".into()));
                }
                let seq = v["seq"].as_u64().ok_or_else(|| at("seq missing".into()))?;
                if last_hash.is_none() {
                    // No anchor: the records must start at the very first one.
                    if seq != 1 {
                        return Err(at(format!("record {seq}: no anchor checkpoint before it")));
                    }
                    *last_hash = Some(format::GENESIS);
                    *next_seq = 1;
                }
                if seq != *next_seq {
                    return Err(at(format!("record {seq}: expected record {}", *next_seq)));
                }
                let prev = v["prev_hash"].as_str().and_then(hex32).ok_or_else(|| at("prev_hash missing".into()))?;
                if Some(prev) != *last_hash {
                    return Err(at(format!("record {seq}: prev_hash does not continue the chain")));
                }
                let canonical = v["canonical"].as_str().ok_or_else(|| at("canonical missing".into()))?;
                if payload_seq(canonical.as_bytes()) != Some(seq) {
                    return Err(at(format!("record {seq}: its canonical bytes name another record")));
                }
                let hash = format::chain(&prev, canonical.as_bytes());
                if v["hash"].as_str() != Some(format::hex(&hash).as_str()) {
                    return Err(at(format!("record {seq}: altered (hash mismatch)")));
                }
                let in_range = range.is_some_and(|(a, b)| (a..=b).contains(&seq));
                if v["in_range"].as_bool() != Some(in_range) {
                    return Err(at(format!("record {seq}: in_range does not match the header's range")));
                }
                if !in_range {
                    r.context += 1;
                }
                *last_hash = Some(hash);
                *next_seq = seq + 1;
            }
            _ => return Err(at("unknown line type".into())),
        }
    }
    finish(&mut cur, &mut reports, n)?;
    for r in &reports {
        if r.from_seq != 0 && r.seal < r.to_seq {
            return Err(format!("the records up to {} are not all present and sealed", r.to_seq));
        }
    }
    if reports.is_empty() {
        return Err("no export header".into());
    }
    Ok(reports)
}

/// The chains under `dir`: `dir` itself when it holds segments, otherwise each `replica-<name>`
/// directory in it (the replicas of a shared store each write their own chain), by name.
pub fn chains(dir: &Path) -> Result<Vec<(Option<String>, std::path::PathBuf)>, String> {
    if !format::segments(dir).map_err(|e| format!("{}: {e}", dir.display()))?.is_empty() {
        return Ok(vec![(None, dir.to_owned())]);
    }
    let mut v = Vec::new();
    for e in std::fs::read_dir(dir).map_err(|e| format!("{}: {e}", dir.display()))? {
        let p = e.map_err(|e| e.to_string())?.path();
        let name = p.file_name().and_then(|n| n.to_str()).and_then(|n| n.strip_prefix("replica-")).map(str::to_owned);
        if let Some(name) = name.filter(|_| p.is_dir()) {
            v.push((Some(name), p));
        }
    }
    v.sort();
    if v.is_empty() {
        return Ok(vec![(None, dir.to_owned())]);
    }
    Ok(v)
}

/// Every record of the trail in `dir`, in order (for tests and tools; queries use the index).
pub fn read_records(dir: &Path) -> Result<Vec<super::record::StoredRecord>, String> {
    let mut out = Vec::new();
    for (_, path) in format::segments(dir).map_err(|e| e.to_string())? {
        let data = format::read_all(&path).map_err(|e| e.to_string())?;
        let (frames, _) = format::decode_frames(&data, HEADER_LEN);
        for f in frames {
            out.push(serde_json::from_slice(&f.payload).map_err(|e| format!("offset {}: {e}", f.offset))?);
        }
    }
    Ok(out)
}

/// A record's time, read from its payload without building the rest of it.
fn record_time(frame: &format::Frame) -> Option<u64> {
    #[derive(serde::Deserialize)]
    struct Time {
        time_ms: u64,
    }
    serde_json::from_slice::<Time>(&frame.payload).ok().map(|t| t.time_ms)
}

/// Removes whole segments, oldest first, whose records are all older than `cutoff_ms`. The
/// newest segment is never removed, nor anything after the first segment that must stay, so
/// the retained segments stay contiguous and the oldest one's header anchors the chain.
/// Returns the files removed.
pub fn prune(dir: &Path, cutoff_ms: u64) -> Result<Vec<std::path::PathBuf>, String> {
    let segs = format::segments(dir).map_err(|e| e.to_string())?;
    let mut removed = Vec::new();
    for (_, path) in segs.iter().take(segs.len().saturating_sub(1)) {
        let data = format::read_all(path).map_err(|e| e.to_string())?;
        let (frames, _) = format::decode_frames(&data, HEADER_LEN);
        // The usual case, nothing past retention: the segment's last record is inside it, so
        // its newest is too, and one record decides (not a parse of every record).
        if frames.last().and_then(record_time).is_some_and(|t| t >= cutoff_ms) {
            break;
        }
        let newest = frames.iter().filter_map(record_time).max().unwrap_or(0);
        if newest >= cutoff_ms {
            break;
        }
        std::fs::remove_file(path).map_err(|e| format!("{}: {e}", path.display()))?;
        removed.push(path.clone());
    }
    if !removed.is_empty() {
        std::fs::File::open(dir).and_then(|d| d.sync_all()).map_err(|e| e.to_string())?;
    }
    Ok(removed)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use std::sync::Arc;

    use super::*;
    use crate::audit::record::{Outcome, Record, RecordKind};
    use crate::audit::trail::{AuditTrail, TrailConfig};

    fn record(time_ms: u64) -> Record {
        Record {
            kind: RecordKind::DataCall,
            time_ms,
            request_id: format!("r{time_ms}"),
            trace_id: None,
            caller: Some("0207123407".into()),
            cert_fingerprint: None,
            end_user: None,
            environment: None,
            service: None,
            operation: "GET /x".into(),
            legal_basis: None,
            grant: None,
            purpose: None,
            subjects: vec![],
            fields: vec![],
            consent_id: None,
            outcome: Outcome::Refused,
            status: 404,
            code: Some("SERVICE_UNKNOWN".into()),
            upstream_status: None,
            latency_us: 1,
            justification: None,
        }
    }

    /// A trail in `dir` with small segments (a few records each at 2,000 bytes), one record a
    /// batch.
    fn config(dir: &Path, segment_bytes: u64, checkpoint_every: u64) -> TrailConfig {
        TrailConfig {
            dir: dir.join("audit"),
            signing_key: dir.join("key"),
            segment_bytes,
            checkpoint_every,
            checkpoint_interval: std::time::Duration::from_secs(60),
            max_batch: 1,
        }
    }

    #[tokio::test]
    async fn pruning_keeps_the_chain_verifiable_from_the_retained_anchor() {
        let dir = tempfile::tempdir().unwrap();
        let store = Arc::new(crate::store::SledStore::open(&dir.path().join("store")).unwrap());
        let cfg = config(dir.path(), 2_000, 7);
        let (trail, _) = AuditTrail::open(cfg.clone(), store).unwrap();
        // 40 records, one "day" apart.
        for day in 0..40u64 {
            trail.append(&record(day * 86_400_000)).await.unwrap();
        }
        trail.close();
        let before = format::segments(&cfg.dir).unwrap().len();
        assert!(before > 5, "{before} segments");
        let report = verify_dir(&cfg.dir, &trail.public_key).unwrap();
        assert_eq!((report.problem, report.records), (None, 40));

        // Keep the last 15 days.
        let removed = prune(&cfg.dir, 25 * 86_400_000).unwrap();
        assert!(!removed.is_empty());
        let report = verify_dir(&cfg.dir, &trail.public_key).unwrap();
        assert_eq!(report.problem, None);
        assert!(report.first_seq > 1 && report.first_seq <= 26, "first retained {}", report.first_seq);
        assert_eq!(report.last_seq, 40);
        let kept = read_records(&cfg.dir).unwrap();
        assert!(kept.iter().all(|r| r.seq >= report.first_seq));
        // Nothing within the retention period is removed.
        assert_eq!(kept.iter().filter(|r| r.record.time_ms >= 25 * 86_400_000).count(), 15);

        // The gateway reopens the pruned trail and goes on appending.
        let store = Arc::new(crate::store::SledStore::open(&dir.path().join("store")).unwrap());
        let (trail, rec) = AuditTrail::open(cfg.clone(), store).unwrap();
        assert_eq!(rec.last_seq, 40);
        assert_eq!(trail.append(&record(41 * 86_400_000)).await.unwrap(), 41);
        trail.close();
        assert_eq!(verify_dir(&cfg.dir, &trail.public_key).unwrap().problem, None);
    }

    /// A segment whose last record is past retention but holds a newer one stays: one record
    /// decides only when it keeps the segment.
    #[tokio::test]
    async fn a_segment_with_any_record_inside_the_retention_stays() {
        let dir = tempfile::tempdir().unwrap();
        let store = Arc::new(crate::store::SledStore::open(&dir.path().join("store")).unwrap());
        let cfg = config(dir.path(), 2_000, 1_000);
        let (trail, _) = AuditTrail::open(cfg.clone(), store).unwrap();
        // Day 30 first, then day 1: the first segment ends on a day-1 record.
        for i in 0..40u64 {
            let day = if i == 0 { 30 } else { 1 };
            trail.append(&record(day * 86_400_000 + i)).await.unwrap();
        }
        trail.close();
        let segs = format::segments(&cfg.dir).unwrap();
        assert!(segs.len() > 5, "{} segments", segs.len());
        let first = format::read_all(&segs[0].1).unwrap();
        let (frames, _) = format::decode_frames(&first, HEADER_LEN);
        assert!(frames.len() >= 2, "the first segment holds both days");
        // Keep 20 days: the first segment holds the day-30 record, so it stays, and so does
        // everything after it.
        assert_eq!(prune(&cfg.dir, 20 * 86_400_000).unwrap(), Vec::<std::path::PathBuf>::new());
        assert_eq!(format::segments(&cfg.dir).unwrap().len(), segs.len());
    }

    /// Segments after the first are prepared in advance (zeros written and synced) and filled
    /// in place. Their zero tail is not damage: the trail reopens at its last record and
    /// verifies. A torn write into the prepared space is cut like any other, zeros left out.
    #[tokio::test]
    async fn prepared_segments_are_filled_in_place_and_reopen_exactly() {
        let dir = tempfile::tempdir().unwrap();
        let store = Arc::new(crate::store::SledStore::open(&dir.path().join("store")).unwrap());
        let size = 16_384u64;
        let cfg = config(dir.path(), size, 1_000);
        let (trail, _) = AuditTrail::open(cfg.clone(), store.clone()).unwrap();
        let mut n = 0u64;
        // The first rotation asks for a prepared segment; a later one finds it ready (the
        // preparing thread runs at idle priority, so on a busy machine that may take a few).
        // Then the last segment is full size, zeros after its records.
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
        loop {
            n += 1;
            trail.append(&record(n)).await.unwrap();
            let segs = format::segments(&cfg.dir).unwrap();
            let last = &segs[segs.len() - 1].1;
            if segs.len() >= 2 && std::fs::metadata(last).unwrap().len() == size {
                // With room for the records below (no rotation before the checks).
                let data = std::fs::read(last).unwrap();
                if format::frames_end(&format::decode_frames(&data, HEADER_LEN).0, HEADER_LEN) < size / 2 {
                    break;
                }
            }
            assert!(std::time::Instant::now() < deadline, "no rotation found a prepared segment");
            if segs.len() >= 2 {
                tokio::time::sleep(std::time::Duration::from_millis(2)).await;
            }
        }
        for _ in 0..3 {
            n += 1;
            trail.append(&record(n)).await.unwrap();
        }
        trail.close();
        let segs = format::segments(&cfg.dir).unwrap();
        let last = &segs[segs.len() - 1].1;
        let data = std::fs::read(last).unwrap();
        assert_eq!(data.len() as u64, size, "the last segment is not a prepared one");
        let (frames, stop) = format::decode_frames(&data, HEADER_LEN);
        let end = format::frames_end(&frames, HEADER_LEN);
        assert_eq!(stop, None);
        assert!(end < size && data[end as usize..].iter().all(|&b| b == 0));
        let report = verify_dir(&cfg.dir, &trail.public_key).unwrap();
        assert_eq!((report.problem, report.records), (None, n));

        // Reopened, it goes on from its last record, in place.
        let (trail, rec) = AuditTrail::open(cfg.clone(), store.clone()).unwrap();
        assert_eq!((rec.last_seq, rec.torn_bytes), (n, 0));
        n += 1;
        assert_eq!(trail.append(&record(n)).await.unwrap(), n);
        trail.close();
        assert_eq!(std::fs::metadata(last).unwrap().len(), size);

        // A torn write in the prepared space: the first 30 bytes of a frame written, the zeros
        // after them not counted.
        let data = std::fs::read(last).unwrap();
        let (frames, _) = format::decode_frames(&data, HEADER_LEN);
        let end = format::frames_end(&frames, HEADER_LEN);
        let mut frame = Vec::new();
        format::encode_frame(&mut frame, format::KIND_RECORD, &[7; 32], &[b'x'; 200]);
        {
            use std::os::unix::fs::FileExt as _;
            let f = std::fs::OpenOptions::new().write(true).open(last).unwrap();
            f.write_all_at(&frame[..30], end).unwrap();
        }
        let (trail, rec) = AuditTrail::open(cfg.clone(), store.clone()).unwrap();
        assert_eq!((rec.last_seq, rec.torn_bytes), (n, 30));
        trail.close();
        assert_eq!(std::fs::metadata(last).unwrap().len(), end);
        assert_eq!(verify_dir(&cfg.dir, &trail.public_key).unwrap().problem, None);

        // Damage with records after it is no crash's: the start is refused, naming the place,
        // and not a byte changes.
        let data = std::fs::read(last).unwrap();
        let (frames, _) = format::decode_frames(&data, HEADER_LEN);
        let victim = &frames[frames.len() - 3];
        let mut damaged = data.clone();
        damaged[victim.offset as usize + 50] ^= 0x01;
        std::fs::write(last, &damaged).unwrap();
        let err = AuditTrail::open(cfg.clone(), store).map(|_| ()).unwrap_err().to_string();
        assert!(
            err.contains(&format!("offset {}, record {}: damaged, and records follow it", victim.offset, n - 2)),
            "{err}"
        );
        assert_eq!(std::fs::read(last).unwrap(), damaged, "the trail was left as it was");
    }
}
