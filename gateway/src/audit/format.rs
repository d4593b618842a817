//! The audit trail's bytes on disk, exactly as `docs/audit-format.md` describes them.
//!
//! ```text
//! segment  = header frame*
//! header   = "PSLAUDT1" first_seq:u64le prev_hash:[32] crc32(first 48 bytes):u32le      (52 bytes)
//! frame    = len:u32le crc:u32le kind:u8 hash:[32] payload:[len]
//!            crc = CRC-32 (IEEE) of kind ‖ hash ‖ payload
//! record   : kind 1, payload = canonical JSON of the record, hash = SHA-256(prev_hash ‖ payload)
//! checkpoints.log = frame*  with kind 2, payload = checkpoint JSON,
//!            hash = SHA-256(hash of the previous checkpoint frame ‖ payload) (v2; v1: hash_seq)
//! ```

use std::fs::File;
use std::io::{self, Read};
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};

pub const MAGIC: &[u8; 8] = b"PSLAUDT1";
pub const HEADER_LEN: usize = 52;
pub const FRAME_OVERHEAD: usize = 4 + 4 + 1 + 32;
pub const KIND_RECORD: u8 = 1;
pub const KIND_CHECKPOINT: u8 = 2;
/// No frame payload is larger than this; a larger length is corruption.
pub const MAX_PAYLOAD: usize = 1 << 20;
/// The chain hash before the very first record.
pub const GENESIS: [u8; 32] = [0; 32];
/// Domain separation of the checkpoint signature (version 1, unchained: read, never written).
pub const CHECKPOINT_TAG: &[u8] = b"passerelle-audit-checkpoint-v1\0";
/// Domain separation of the chained checkpoint signature (version 2).
pub const CHECKPOINT_TAG_V2: &[u8] = b"passerelle-audit-checkpoint-v2\0";
pub const CHECKPOINTS_FILE: &str = "checkpoints.log";
/// The unit of the gateway's direct segment writes: their offset, length and memory address are
/// multiples of it, so such a segment ends on a multiple of it, padded with zeros after its last
/// frame. 4 KiB is the file system block size here and a multiple of every device's logical block.
pub const BLOCK: usize = 4096;

pub fn chain(prev: &[u8; 32], payload: &[u8]) -> [u8; 32] {
    let mut h = Sha256::new();
    h.update(prev);
    h.update(payload);
    h.finalize().into()
}

fn crc(kind: u8, hash: &[u8; 32], payload: &[u8]) -> u32 {
    let mut c = crc32fast::Hasher::new();
    c.update(&[kind]);
    c.update(hash);
    c.update(payload);
    c.finalize()
}

/// Appends one frame to `out`.
pub fn encode_frame(out: &mut Vec<u8>, kind: u8, hash: &[u8; 32], payload: &[u8]) {
    out.extend_from_slice(&(payload.len() as u32).to_le_bytes());
    out.extend_from_slice(&crc(kind, hash, payload).to_le_bytes());
    out.push(kind);
    out.extend_from_slice(hash);
    out.extend_from_slice(payload);
}

pub fn encode_header(first_seq: u64, prev_hash: &[u8; 32]) -> [u8; HEADER_LEN] {
    let mut h = [0u8; HEADER_LEN];
    h[..8].copy_from_slice(MAGIC);
    h[8..16].copy_from_slice(&first_seq.to_le_bytes());
    h[16..48].copy_from_slice(prev_hash);
    let c = crc32fast::hash(&h[..48]);
    h[48..].copy_from_slice(&c.to_le_bytes());
    h
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Header {
    pub first_seq: u64,
    pub prev_hash: [u8; 32],
}

pub fn decode_header(b: &[u8]) -> Option<Header> {
    if b.len() < HEADER_LEN || &b[..8] != MAGIC {
        return None;
    }
    let c = u32::from_le_bytes(b[48..52].try_into().ok()?);
    if crc32fast::hash(&b[..48]) != c {
        return None;
    }
    Some(Header { first_seq: u64::from_le_bytes(b[8..16].try_into().ok()?), prev_hash: b[16..48].try_into().ok()? })
}

/// One frame read back.
#[derive(Debug, Clone)]
pub struct Frame {
    /// Byte offset of the frame in its file.
    pub offset: u64,
    pub kind: u8,
    pub hash: [u8; 32],
    pub payload: Vec<u8>,
}

/// Why reading frames stopped before the end of the file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FrameError {
    /// The file ends inside a frame (a write was cut short).
    Truncated { offset: u64 },
    /// The frame's checksum or length is wrong.
    Corrupt { offset: u64 },
}

impl FrameError {
    pub fn offset(&self) -> u64 {
        match self {
            FrameError::Truncated { offset } | FrameError::Corrupt { offset } => *offset,
        }
    }
}

/// Decodes the frames of `data` starting at `start`. Returns the frames read and, if it stopped
/// early, why. Zeros to the end of `data` are not an error: they are the unwritten part of a
/// segment prepared in advance (no frame starts with a zero length).
pub fn decode_frames(data: &[u8], start: usize) -> (Vec<Frame>, Option<FrameError>) {
    let (frames, stop) = decode_frames_until_damage(data, start);
    match stop {
        Some(stop) if data[stop.offset() as usize..].iter().all(|&b| b == 0) => (frames, None),
        stop => (frames, stop),
    }
}

/// Where the frames read from `start` end: the durable length of a segment.
pub fn frames_end(frames: &[Frame], start: usize) -> u64 {
    frames.last().map_or(start as u64, |f| f.offset + (FRAME_OVERHEAD + f.payload.len()) as u64)
}

/// The end of the bytes written from `at`: trailing zeros left out when they are those of a
/// prepared segment (at least a block of them) or a direct write's padding (the file ends on a
/// [`BLOCK`] boundary). Otherwise they are kept: a torn frame may itself end in a few zero bytes.
pub fn written_end(data: &[u8], at: usize) -> usize {
    let tail = data[at..].iter().rev().take_while(|&&b| b == 0).count();
    if tail >= BLOCK || data.len() % BLOCK == 0 { data.len() - tail } else { data.len() }
}

/// Decodes frames from `start` until the end of `data` or the first damage; zeros are damage
/// here (`checkpoints.log` is never prepared in advance).
pub fn decode_frames_strict(data: &[u8], start: usize) -> (Vec<Frame>, Option<FrameError>) {
    decode_frames_until_damage(data, start)
}

/// Whether the damage at `at` is a torn *last* frame: a frame whose header is cut short, or
/// whose declared extent (at most [`MAX_PAYLOAD`]) is followed by nothing but zeros to the end
/// of `data`. A crash interrupts at most the last write; any other damage is not a crash's.
pub fn torn_last_frame(data: &[u8], stop: &FrameError) -> bool {
    let at = stop.offset() as usize;
    if data.len() - at < FRAME_OVERHEAD {
        return true;
    }
    let len = u32::from_le_bytes([data[at], data[at + 1], data[at + 2], data[at + 3]]) as usize;
    if len > MAX_PAYLOAD {
        return false;
    }
    let end = at + FRAME_OVERHEAD + len;
    end >= data.len() || data[end..].iter().all(|&b| b == 0)
}

fn decode_frames_until_damage(data: &[u8], start: usize) -> (Vec<Frame>, Option<FrameError>) {
    let mut frames = Vec::new();
    let mut at = start;
    while at < data.len() {
        let offset = at as u64;
        if data.len() - at < FRAME_OVERHEAD {
            return (frames, Some(FrameError::Truncated { offset }));
        }
        let len = u32::from_le_bytes([data[at], data[at + 1], data[at + 2], data[at + 3]]) as usize;
        let want = u32::from_le_bytes([data[at + 4], data[at + 5], data[at + 6], data[at + 7]]);
        if len > MAX_PAYLOAD {
            return (frames, Some(FrameError::Corrupt { offset }));
        }
        if data.len() - at - FRAME_OVERHEAD < len {
            return (frames, Some(FrameError::Truncated { offset }));
        }
        let kind = data[at + 8];
        let mut hash = [0u8; 32];
        hash.copy_from_slice(&data[at + 9..at + 41]);
        let payload = &data[at + 41..at + 41 + len];
        if crc(kind, &hash, payload) != want {
            return (frames, Some(FrameError::Corrupt { offset }));
        }
        frames.push(Frame { offset, kind, hash, payload: payload.to_vec() });
        at += FRAME_OVERHEAD + len;
    }
    (frames, None)
}

pub fn read_all(path: &Path) -> io::Result<Vec<u8>> {
    let mut v = Vec::new();
    File::open(path)?.read_to_end(&mut v)?;
    Ok(v)
}

/// Segment file name for a segment whose first record is `first_seq`.
pub fn segment_name(first_seq: u64) -> String {
    format!("segment-{first_seq:020}.log")
}

/// The segment files of `dir`, in order.
pub fn segments(dir: &Path) -> io::Result<Vec<(u64, PathBuf)>> {
    let mut v = Vec::new();
    for e in std::fs::read_dir(dir)? {
        let p = e?.path();
        let Some(name) = p.file_name().and_then(|n| n.to_str()) else { continue };
        if let Some(n) = name.strip_prefix("segment-").and_then(|r| r.strip_suffix(".log"))
            && let Ok(first) = n.parse::<u64>()
        {
            v.push((first, p));
        }
    }
    v.sort();
    Ok(v)
}

/// A signed checkpoint: Ed25519 over `CHECKPOINT_TAG_V2 ‖ seq:u64be ‖ hash ‖ time_ms:u64be ‖
/// prev`, where `prev` is the hash of the previous checkpoint frame, so that none can be
/// dropped, inserted or reordered without the key (docs/audit-format.md §5).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Checkpoint {
    pub seq: u64,
    /// Hex of the chain hash after record `seq`.
    pub hash: String,
    pub time_ms: u64,
    /// Hex of the previous checkpoint frame's hash (64 zeros for the first). Absent in the
    /// unchained version 1.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prev: Option<String>,
    /// Hex of the signer's Ed25519 public key (to tell keys apart; never trusted).
    pub public_key: String,
    /// Hex of the signature.
    pub signature: String,
}

/// The bytes a version 1 checkpoint signs.
pub fn checkpoint_message(seq: u64, hash: &[u8; 32], time_ms: u64) -> Vec<u8> {
    let mut m = Vec::with_capacity(CHECKPOINT_TAG.len() + 48);
    m.extend_from_slice(CHECKPOINT_TAG);
    m.extend_from_slice(&seq.to_be_bytes());
    m.extend_from_slice(hash);
    m.extend_from_slice(&time_ms.to_be_bytes());
    m
}

/// The bytes a version 2 checkpoint signs.
pub fn checkpoint_message_v2(seq: u64, hash: &[u8; 32], time_ms: u64, prev: &[u8; 32]) -> Vec<u8> {
    let mut m = Vec::with_capacity(CHECKPOINT_TAG_V2.len() + 80);
    m.extend_from_slice(CHECKPOINT_TAG_V2);
    m.extend_from_slice(&seq.to_be_bytes());
    m.extend_from_slice(hash);
    m.extend_from_slice(&time_ms.to_be_bytes());
    m.extend_from_slice(prev);
    m
}

/// A version 2 checkpoint of record `seq` (chain hash `hash`) signed with `key` after the
/// checkpoint frame whose hash is `prev`: its frame bytes (appended to `out`) and the frame's
/// hash, which the next checkpoint names.
pub fn signed_checkpoint(
    out: &mut Vec<u8>,
    key: &ring::signature::Ed25519KeyPair,
    seq: u64,
    hash: &[u8; 32],
    time_ms: u64,
    prev: &[u8; 32],
) -> [u8; 32] {
    use ring::signature::KeyPair as _;
    let sig = key.sign(&checkpoint_message_v2(seq, hash, time_ms, prev));
    let cp = Checkpoint {
        seq,
        hash: hex(hash),
        time_ms,
        prev: Some(hex(prev)),
        public_key: hex(key.public_key().as_ref()),
        signature: hex(sig.as_ref()),
    };
    // Serialising a struct of strings and integers cannot fail.
    let payload = serde_json::to_vec(&cp).unwrap_or_default();
    let frame_hash = checkpoint_chain(prev, &payload);
    encode_frame(out, KIND_CHECKPOINT, &frame_hash, &payload);
    frame_hash
}

/// The hash a version 2 checkpoint frame stores: it chains the checkpoints.
pub fn checkpoint_chain(prev: &[u8; 32], payload: &[u8]) -> [u8; 32] {
    chain(prev, payload)
}

pub fn hex(b: &[u8]) -> String {
    let mut s = String::with_capacity(b.len() * 2);
    certs::hex_encode(b, &mut s);
    s
}

pub fn unhex(s: &str) -> Option<Vec<u8>> {
    if s.len() % 2 != 0 {
        return None;
    }
    (0..s.len()).step_by(2).map(|i| u8::from_str_radix(s.get(i..i + 2)?, 16).ok()).collect()
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn frames_round_trip_and_detect_damage() {
        let mut buf = Vec::new();
        let h1 = chain(&GENESIS, b"{\"seq\":1}");
        encode_frame(&mut buf, KIND_RECORD, &h1, b"{\"seq\":1}");
        encode_frame(&mut buf, KIND_RECORD, &chain(&h1, b"{\"seq\":2}"), b"{\"seq\":2}");
        let (f, e) = decode_frames(&buf, 0);
        assert_eq!((f.len(), e), (2, None));
        assert_eq!(f[1].payload, b"{\"seq\":2}");
        // Cut inside the second frame.
        let (f, e) = decode_frames(&buf[..buf.len() - 3], 0);
        assert_eq!(f.len(), 1);
        assert!(matches!(e, Some(FrameError::Truncated { .. })));
        // Flip a payload byte of the first frame.
        let mut bad = buf.clone();
        bad[FRAME_OVERHEAD + 2] ^= 1;
        let (f, e) = decode_frames(&bad, 0);
        assert_eq!((f.len(), e), (0, Some(FrameError::Corrupt { offset: 0 })));
        let hd = encode_header(7, &h1);
        assert_eq!(decode_header(&hd), Some(Header { first_seq: 7, prev_hash: h1 }));
        assert_eq!(unhex(&hex(&h1)).unwrap(), h1);
    }
}
