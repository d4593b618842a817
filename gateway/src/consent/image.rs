//! The consent index's image: the in-memory index written to one file when the gateway stops
//! cleanly, and read back at the next start instead of rebuilding the index from every
//! consent in the store.
//!
//! Trusting an image is safe only if no consent changed after it was written. The image names
//! the consent log it was made from (its random identity) and the log's length at that
//! moment; the log only grows, by whole synced frames (a torn last frame is cut back to the
//! last whole one), so the same identity and length mean the same consents. Any change after
//! the image — through the gateway, by the CLI on a stopped gateway, lost by a kill — leaves
//! another length, and another store another identity: the index is then rebuilt from the log.
//!
//! Format (little-endian): `PCIMAGE2`; the log's identity (16 bytes) and length (`u64`); the
//! interned names (`u32` count, then per name its `u32` id, `u16` length and UTF-8 bytes); the
//! cells (`u64` count, then per consent 40 bytes: the id's halves `u64` twice, the subject with
//! the day of the last validation and the revoked flag `u64`, validity end `u64`, recipient
//! `u32`, service and purpose `u16`); then the SHA-256 of everything before it.

use std::fs::File;
use std::io::{BufReader, BufWriter, Read, Write};
use std::path::Path;

use sha2::{Digest as _, Sha256};

use super::{Cell, Names, SHARDS, Shard, room_per_shard, shard_of};

const MAGIC: &[u8; 8] = b"PCIMAGE3";
const CELL: usize = 40;

/// A writer that hashes what it writes.
struct Hashing<W: Write> {
    inner: W,
    hash: Sha256,
}

impl<W: Write> Write for Hashing<W> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.hash.update(&buf[..n]);
        Ok(n)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.inner.flush()
    }
}

/// A reader that hashes what it reads.
struct Hashed<R: Read> {
    inner: R,
    hash: Sha256,
}

impl<R: Read> Hashed<R> {
    fn exact<const N: usize>(&mut self) -> std::io::Result<[u8; N]> {
        let mut b = [0u8; N];
        self.inner.read_exact(&mut b)?;
        self.hash.update(b);
        Ok(b)
    }

    fn bytes(&mut self, n: usize) -> std::io::Result<Vec<u8>> {
        let mut b = vec![0u8; n];
        self.inner.read_exact(&mut b)?;
        self.hash.update(&b);
        Ok(b)
    }

    fn u16(&mut self) -> std::io::Result<u16> {
        self.exact::<2>().map(u16::from_le_bytes)
    }

    fn u32(&mut self) -> std::io::Result<u32> {
        self.exact::<4>().map(u32::from_le_bytes)
    }

    fn u64(&mut self) -> std::io::Result<u64> {
        self.exact::<8>().map(u64::from_le_bytes)
    }
}

fn cell_bytes(c: &Cell) -> [u8; CELL] {
    let mut b = [0u8; CELL];
    b[0..8].copy_from_slice(&c.id[0].to_le_bytes());
    b[8..16].copy_from_slice(&c.id[1].to_le_bytes());
    b[16..24].copy_from_slice(&c.subject_day.to_le_bytes());
    b[24..32].copy_from_slice(&c.valid_until_ms.to_le_bytes());
    b[32..36].copy_from_slice(&c.recipient.to_le_bytes());
    b[36..38].copy_from_slice(&c.service.to_le_bytes());
    b[38..40].copy_from_slice(&c.purpose.to_le_bytes());
    b
}

fn cell_of(b: &[u8; CELL]) -> Cell {
    let u64_at = |i: usize| {
        let mut a = [0u8; 8];
        a.copy_from_slice(&b[i..i + 8]);
        u64::from_le_bytes(a)
    };
    Cell {
        id: [u64_at(0), u64_at(8)],
        subject_day: u64_at(16),
        valid_until_ms: u64_at(24),
        recipient: u32::from_le_bytes([b[32], b[33], b[34], b[35]]),
        service: u16::from_le_bytes([b[36], b[37]]),
        purpose: u16::from_le_bytes([b[38], b[39]]),
    }
}

fn invalid(what: &str) -> std::io::Error {
    std::io::Error::new(std::io::ErrorKind::InvalidData, what.to_owned())
}

/// Writes the image of `names` and `shards`, made from the log in `state` (identity,
/// length), to `path` (a temporary file, synced, renamed, the directory synced). The caller
/// holds every shard and lets no change through.
pub(super) fn write(path: &Path, state: ([u8; 16], u64), names: &Names, shards: &[&Shard]) -> std::io::Result<()> {
    let tmp = path.with_extension("tmp");
    let file = File::create(&tmp)?;
    let mut w = Hashing { inner: BufWriter::with_capacity(1 << 20, file), hash: Sha256::new() };
    w.write_all(MAGIC)?;
    w.write_all(&state.0)?;
    w.write_all(&state.1.to_le_bytes())?;
    let mut by_id: Vec<(&str, u32)> = names.ids.iter().map(|(k, v)| (&**k, *v)).collect();
    by_id.sort_by_key(|(_, id)| *id);
    w.write_all(&(by_id.len() as u32).to_le_bytes())?;
    for (name, id) in by_id {
        let len = u16::try_from(name.len()).map_err(|_| invalid("a service or purpose name over 64 KiB"))?;
        w.write_all(&id.to_le_bytes())?;
        w.write_all(&len.to_le_bytes())?;
        w.write_all(name.as_bytes())?;
    }
    let cells: u64 = shards.iter().map(|s| s.len() as u64).sum();
    w.write_all(&cells.to_le_bytes())?;
    for shard in shards {
        for cell in shard.table.iter() {
            w.write_all(&cell_bytes(cell))?;
        }
    }
    let digest: [u8; 32] = w.hash.finalize_reset().into();
    w.inner.write_all(&digest)?;
    let file = w.inner.into_inner().map_err(std::io::IntoInnerError::into_error)?;
    file.sync_all()?;
    std::fs::rename(&tmp, path)?;
    if let Some(dir) = path.parent() {
        File::open(dir)?.sync_all()?;
    }
    Ok(())
}

/// Reads the image at `path` into fresh names and shards, if it was made from the log in
/// `state` (identity, length) and its content hashes to its digest; `Ok(None)` when not (the
/// caller rebuilds from the log).
pub(super) fn read(path: &Path, state: ([u8; 16], u64)) -> std::io::Result<Option<(Names, Vec<Shard>)>> {
    let file = File::open(path)?;
    let len = file.metadata()?.len();
    if len < 8 + 24 + 4 + 8 + 32 {
        return Ok(None);
    }
    let mut r = Hashed { inner: BufReader::with_capacity(1 << 20, file), hash: Sha256::new() };
    if &r.exact::<8>()? != MAGIC || r.exact::<16>()? != state.0 || r.u64()? != state.1 {
        return Ok(None);
    }
    let mut names = Names::default();
    for _ in 0..r.u32()? {
        let id = r.u32()?;
        let n = usize::from(r.u16()?);
        let name = String::from_utf8(r.bytes(n)?).map_err(|_| invalid("a name is not UTF-8"))?;
        names.ids.insert(name.into_boxed_str(), id);
    }
    let mut shards: Vec<Shard> = (0..SHARDS).map(|_| Shard::default()).collect();
    let cells = r.u64()?;
    // A count the file cannot hold is damage.
    if cells > len / CELL as u64 {
        return Ok(None);
    }
    let room = room_per_shard(cells as usize);
    for shard in &mut shards {
        shard.reserve(room);
    }
    for _ in 0..cells {
        let cell = cell_of(&r.exact::<CELL>()?);
        shards[shard_of(cell.subject())].insert(cell);
    }
    let digest: [u8; 32] = r.hash.finalize().into();
    let mut stored = [0u8; 32];
    r.inner.read_exact(&mut stored)?;
    let mut rest = [0u8; 1];
    let at_end = r.inner.read(&mut rest)? == 0;
    Ok((digest == stored && at_end).then_some((names, shards)))
}
