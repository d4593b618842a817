//! One shard's cells: an open-addressing table in which a lookup reads the cells themselves,
//! with no control bytes or pointers to follow first.
//!
//! A cell's home is its key's hash scaled to the table (`hash × capacity / 2⁶⁴`); a cell that
//! finds its home taken goes to the next free one (linear probing), and a cell further from
//! its home takes the place of one nearer to its own (Robin Hood order). So the cells of one
//! key sit side by side from their home on, and a lookup stops at the first cell that lies
//! nearer to its home than the lookup has come from its own: at 10 million consents a hit or a
//! miss reads one or two adjacent cache lines. (hashbrown's table, used before, read a control
//! byte group first, then the cell: two dependent reads from memory.) A Bloom filter of the
//! keys, 1.3 bytes a consent, answers most misses without reading a cell.
//!
//! Past [`HUGE`] bytes a table lives in an anonymous mapping of whole 2 MiB pieces, marked for
//! transparent huge pages: a random read then needs no page-table walk through memory, which
//! on this machine costs as much as the read itself. Such a table grows one piece at a time,
//! which keeps its load near [`MAX_LOAD`] and its memory near its cells'. A cell whose subject
//! is 0 is free (no NISS is 0), so a fresh mapping's zeroes are an empty table.

use super::Cell;

/// Above this, a table is a mapping marked for huge pages, sized in pieces of this size.
const HUGE: usize = 2 << 20;
/// Cells of all tables ≤ this share of the slots (a quotient, 4/5): past it the table grows.
const MAX_LOAD: (usize, usize) = (4, 5);
const CELL: usize = std::mem::size_of::<Cell>();

#[derive(Debug, Default)]
enum Slots {
    #[default]
    None,
    Heap(Box<[Cell]>),
    Mapped(memmap2::MmapMut),
}

#[derive(Debug, Default)]
pub(super) struct Table {
    slots: Slots,
    len: usize,
    /// A Bloom filter of the keys held (two bits of one word a key, a word for every eight
    /// slots): most keys the table does not hold are answered from it without reading a cell.
    /// At a million consents it stays in the cache; at ten million (13 MB) a miss costs about
    /// one read from memory, as a hit does.
    filter: Box<[u64]>,
}

impl Table {
    fn slots(&self) -> &[Cell] {
        match &self.slots {
            Slots::None => &[],
            Slots::Heap(b) => b,
            Slots::Mapped(m) => bytemuck::cast_slice(&m[..m.len() / CELL * CELL]),
        }
    }

    fn slots_mut(&mut self) -> &mut [Cell] {
        match &mut self.slots {
            Slots::None => &mut [],
            Slots::Heap(b) => b,
            Slots::Mapped(m) => {
                let n = m.len() / CELL * CELL;
                bytemuck::cast_slice_mut(&mut m[..n])
            }
        }
    }

    pub(super) fn len(&self) -> usize {
        self.len
    }

    /// Whether the table is held in huge-page pieces (for the tests).
    #[cfg(test)]
    fn mapped(&self) -> bool {
        matches!(self.slots, Slots::Mapped(_))
    }

    /// Every cell, in no particular order.
    pub(super) fn iter(&self) -> impl Iterator<Item = &Cell> {
        self.slots().iter().filter(|c| !c.is_free())
    }

    /// Whether a cell of `hash` may be held (false: none is).
    fn may_hold(&self, hash: u64) -> bool {
        let (word, bits) = filter_bits(hash, self.filter.len());
        self.filter.get(word).is_some_and(|w| w & bits == bits)
    }

    /// Asks the processor to bring what a lookup of `hash` reads first (the filter's word, the
    /// home cell and the one after it) into its cache, and does not wait for it. At ten
    /// million consents each is a read from memory (about 200 ns here); asked for early
    /// enough, the lookup finds them in the cache.
    pub(super) fn prefetch(&self, hash: u64) {
        let slots = self.slots();
        let cap = slots.len();
        if cap == 0 {
            return;
        }
        let (word, _) = filter_bits(hash, self.filter.len());
        prefetch_index::prefetch_index(&self.filter[..], word);
        // A cell is 40 bytes: the home cell may end in the next cache line, where the next
        // cell begins.
        let at = home(hash, cap);
        prefetch_index::prefetch_index(slots, at);
        prefetch_index::prefetch_index(slots, if at + 1 == cap { 0 } else { at + 1 });
    }

    /// The cells whose key hashes to `hash` (and perhaps others: the caller compares keys).
    pub(super) fn iter_hash(&self, hash: u64) -> impl Iterator<Item = &Cell> {
        self.probe(hash).map(|(_, c)| c)
    }

    /// The cell of `hash` for which `same` holds, to change in place (its key stays).
    pub(super) fn find_mut(&mut self, hash: u64, same: impl Fn(&Cell) -> bool) -> Option<&mut Cell> {
        let at = self.probe(hash).find(|(_, c)| same(c)).map(|(at, _)| at)?;
        self.slots_mut().get_mut(at)
    }

    /// The slots, with their cells, that hold a cell of `hash`: from its home on, up to the
    /// first free slot or the first cell nearer its own home than `hash`'s would be there.
    fn probe(&self, hash: u64) -> impl Iterator<Item = (usize, &Cell)> {
        let slots = self.slots();
        let cap = slots.len();
        let mut at = if cap == 0 { 0 } else { home(hash, cap) };
        // The home slot does not depend on the filter, only whether it is read: the filter's
        // answer is a branch, not an operand of the slot's address. So the processor reads the
        // home cell on the branch's predicted side while the filter's word is still on its
        // way, and a hit waits for one read from memory, not for two in a row. (Choosing the
        // capacity from the filter, as this did before, made the address wait for the filter:
        // at ten million consents, in alternating runs of `benches/consent.rs`, a hit took
        // 372–380 ns that way and 290–311 ns this way, a miss 220–228 and 183–198 ns.)
        let held = cap != 0 && self.may_hold(hash);
        let mut dist = 0;
        std::iter::from_fn(move || {
            if !held {
                return None;
            }
            loop {
                let c = &slots[at];
                if c.is_free() {
                    return None;
                }
                let h = c.hash();
                if distance(h, at, cap) < dist {
                    return None;
                }
                let here = at;
                at = if at + 1 == cap { 0 } else { at + 1 };
                dist += 1;
                if h == hash {
                    return Some((here, c));
                }
            }
        })
    }

    /// Puts a cell no other cell is the same consent as.
    pub(super) fn insert(&mut self, cell: Cell) {
        if cell.is_free() {
            // Only a subject of 0 makes such a cell, and no NISS is 0: nothing to index.
            return;
        }
        if (self.len + 1) * MAX_LOAD.1 > self.slots().len() * MAX_LOAD.0 {
            // Half as many again, or one more piece of a mapped table.
            self.grow_to(self.len + 1 + (self.len / 2).min(HUGE / CELL / 2));
        }
        mark(&mut self.filter, cell.hash());
        place(self.slots_mut(), cell);
        self.len += 1;
    }

    /// Makes room for `more` cells without growing on the way.
    pub(super) fn reserve(&mut self, more: usize) {
        let need = self.len + more;
        if need * MAX_LOAD.1 > self.slots().len() * MAX_LOAD.0 {
            self.grow_to(need);
        }
    }

    /// Moves the cells to a table that holds `need` cells within its load.
    fn grow_to(&mut self, need: usize) {
        let min = (need * MAX_LOAD.1).div_ceil(MAX_LOAD.0).max(16);
        let mut slots = if min * CELL <= HUGE {
            Slots::Heap(vec![Cell::FREE; min].into_boxed_slice())
        } else {
            let bytes = (min * CELL).div_ceil(HUGE) * HUGE;
            match memmap2::MmapMut::map_anon(bytes) {
                Ok(m) => {
                    // Without huge pages the table works as well, only slower.
                    #[cfg(target_os = "linux")]
                    let _ = m.advise(memmap2::Advice::HugePage);
                    Slots::Mapped(m)
                }
                Err(e) => {
                    tracing::warn!(error = %e, bytes, "no anonymous mapping for a consent index table; using the heap");
                    Slots::Heap(vec![Cell::FREE; min].into_boxed_slice())
                }
            }
        };
        std::mem::swap(&mut self.slots, &mut slots);
        let old = Table { slots, len: 0, filter: Box::default() };
        let cap = self.slots().len();
        let mut filter = vec![0u64; cap.div_ceil(8)].into_boxed_slice();
        let new = self.slots_mut();
        for c in old.iter() {
            mark(&mut filter, c.hash());
            place(new, *c);
        }
        self.filter = filter;
    }
}

/// The word of a filter of `words` words, and the two bits in it, that stand for `hash`: from
/// the hash mixed again (`home` takes its high bits; these must not follow them).
fn filter_bits(hash: u64, words: usize) -> (usize, u64) {
    // The finaliser of MurmurHash3.
    let mut m = hash ^ (hash >> 33);
    m = m.wrapping_mul(0xff51_afd7_ed55_8ccd);
    m ^= m >> 33;
    m = m.wrapping_mul(0xc4ce_b9fe_1a85_ec53);
    m ^= m >> 33;
    let word = ((u128::from(m) * words as u128) >> 64) as usize;
    (word, 1 << (m & 63) | 1 << ((m >> 6) & 63))
}

/// Notes `hash` in `filter`.
fn mark(filter: &mut [u64], hash: u64) {
    let (word, bits) = filter_bits(hash, filter.len());
    filter[word] |= bits;
}

/// Where a cell of `hash` belongs in `cap` slots.
fn home(hash: u64, cap: usize) -> usize {
    ((u128::from(hash) * cap as u128) >> 64) as usize
}

/// How far slot `at` lies past the home of `hash`.
fn distance(hash: u64, at: usize, cap: usize) -> usize {
    let h = home(hash, cap);
    if at >= h { at - h } else { at + cap - h }
}

/// Puts `cell` in `slots` (which have a free slot), Robin Hood order.
fn place(slots: &mut [Cell], mut cell: Cell) {
    let cap = slots.len();
    let (mut at, mut dist) = (home(cell.hash(), cap), 0);
    loop {
        let c = &mut slots[at];
        if c.is_free() {
            *c = cell;
            return;
        }
        let d = distance(c.hash(), at, cap);
        if d < dist {
            std::mem::swap(c, &mut cell);
            dist = d;
        }
        at = if at + 1 == cap { 0 } else { at + 1 };
        dist += 1;
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use std::collections::{BTreeMap, BTreeSet};

    use super::super::{Cell, Entry};
    use super::*;

    fn cell(subject: u64, recipient: u64, id: u64, revoked: bool) -> Cell {
        let e = Entry { service: 1, purpose: 2, valid_until_ms: id, id: [id, !id], validated_day: 20_000, revoked };
        Cell::new(subject, recipient, &e)
    }

    /// The ids the table holds for (subject, recipient), as a lookup finds them.
    fn found(t: &Table, subject: u64, recipient: u64) -> BTreeSet<u64> {
        let probe = cell(subject, recipient, 0, false);
        t.iter_hash(probe.hash())
            .filter(|c| c.subject() == subject && c.recipient == probe.recipient)
            .map(|c| c.id[0])
            .collect()
    }

    /// Random keys over a small range (so that many cells share a key and long runs form), new
    /// cells and changes of existing ones, up to a size held in huge-page pieces: every key,
    /// present or not, finds exactly the cells a map holds for it, and a change is seen.
    #[test]
    fn the_table_finds_what_a_map_holds_from_the_heap_to_mapped_pieces() {
        let mut t = Table::default();
        let mut model: BTreeMap<(u64, u64), BTreeMap<u64, bool>> = BTreeMap::new();
        let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
        let mut next = || {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x
        };
        let mut checked_small = false;
        for id in 1..=150_000u64 {
            let (subject, recipient) = (1 + next() % 60_000, 456_123_494 + next() % 3);
            t.insert(cell(subject, recipient, id, false));
            model.entry((subject, recipient)).or_default().insert(id, false);
            if id % 7 == 0 {
                // Revoke an earlier consent of a key already held, in place.
                let (&(s, r), ids) = model.range((subject, 0)..).next().unwrap();
                let (&old, _) = ids.iter().next().unwrap();
                let probe = cell(s, r, old, true);
                let c = t.find_mut(probe.hash(), |c| c.id == probe.id && c.recipient == probe.recipient).unwrap();
                *c = probe;
                model.get_mut(&(s, r)).unwrap().insert(old, true);
            }
            if !checked_small && id == 1_000 {
                assert!(!t.mapped());
                checked_small = true;
                for (&(s, r), ids) in &model {
                    assert_eq!(found(&t, s, r), ids.keys().copied().collect());
                }
            }
        }
        assert!(t.mapped(), "150,000 cells (6 MB) are held in mapped pieces");
        assert_eq!(t.len(), 150_000);
        assert_eq!(t.iter().count(), 150_000);
        for s in 1..=60_001 {
            for r in 456_123_494..456_123_498 {
                let want: BTreeSet<u64> =
                    model.get(&(s, r)).map(|ids| ids.keys().copied().collect()).unwrap_or_default();
                assert_eq!(found(&t, s, r), want, "subject {s}, recipient {r}");
            }
        }
        let revoked = t.iter().filter(|c| c.revoked()).count();
        assert_eq!(revoked, model.values().flat_map(|ids| ids.values()).filter(|r| **r).count());
        // The load stays within its bound, and a mapped table is whole 2 MiB pieces.
        let cap = t.slots().len();
        assert!(t.len() * MAX_LOAD.1 <= cap * MAX_LOAD.0);
        assert_eq!((cap * CELL).div_ceil(HUGE) * HUGE / CELL, cap);
    }

    /// A table given room for n cells takes n cells without growing.
    #[test]
    fn reserved_room_is_enough() {
        for n in [1, 10, 1_000, 52_000, 60_000] {
            let mut t = Table::default();
            t.reserve(n);
            let cap = t.slots().len();
            for id in 0..n as u64 {
                t.insert(cell(1 + id * 7_919, 456_123_494, id, false));
            }
            assert_eq!(t.slots().len(), cap, "{n} cells");
        }
    }

    /// Asking ahead is only a hint: on an empty table, and for keys whose home is the last
    /// slot (the next one is the first), it reads nothing and changes nothing.
    #[test]
    fn asking_ahead_changes_nothing() {
        let mut t = Table::default();
        t.prefetch(u64::MAX);
        for id in 1..=1_000u64 {
            t.insert(cell(id, 456_123_494, id, false));
        }
        for hash in [0, 1, u64::MAX, u64::MAX / 2] {
            t.prefetch(hash);
        }
        assert_eq!(home(u64::MAX, t.slots().len()), t.slots().len() - 1);
        assert_eq!(t.len(), 1_000);
        for id in 1..=1_000u64 {
            assert_eq!(found(&t, id, 456_123_494), BTreeSet::from([id]));
        }
    }

    #[test]
    fn a_free_cell_is_not_indexed() {
        let mut t = Table::default();
        t.insert(Cell::FREE);
        assert_eq!(t.len(), 0);
        assert_eq!(t.iter().count(), 0);
    }
}
