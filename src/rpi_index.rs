//! The RPI index: from a Rolling Proximity Identifier to every stored row that carries it.
//!
//! Matching derives the RPIs of every diagnosis key (about 170 per key with the ±2 h
//! tolerance) and asks which of them were seen at a venue. With millions of keys that is
//! hundreds of millions of lookups against tens of millions of stored sightings, almost all of
//! them misses, so the layout is tuned for a fast "no":
//!
//! - a split-block Bloom filter (10 bits per distinct RPI, ~1 % false positives) answers most
//!   misses from one 32-byte block (12.5 MB at 10 M RPIs). Its test is branch-free: stopping
//!   at the first clear bit mispredicts on about every other probe, which cost a third of the
//!   lookup time; on x86-64 the lookup loop is also compiled for AVX2 (chosen at run time),
//!   which computes the 8 bit positions in a few vector instructions;
//! - behind it, an open-addressing table of 24-byte slots (the full RPI, and its row or where
//!   its rows are), 60 % full (sized exactly, not to a power of two: a multiply maps a hash
//!   onto the slots), probed linearly. A hit costs one cache miss when the RPI is in one row
//!   (the row id is in the slot), two when it is in several;
//! - the slot is chosen by a seeded 64-bit mixer, not the raw RPI: RPIs arrive from radios, so
//!   an attacker can broadcast chosen RPIs; a per-index random seed keeps them from piling up
//!   in one probe run;
//! - [`RpiIndex::lookup_batch`] prefetches in three stages per chunk of 64 probes (filter
//!   blocks; then table slots of those that pass; then probes), so a chunk's cache misses
//!   overlap. Measured alternatives that were slower on the reference machine: radix
//!   partitioning of the probes by filter region (25 M/s), a two-chunk-deep pipeline, chunks
//!   of 32 or 128; transparent huge pages made no difference. Figures: docs/performance.md.
//!
//! Pure and single-threaded: the caller owns the rows (sightings) and decides how to split work
//! across threads (an index is `Sync`, so threads can share one).

use crate::crypto::Rpi;
use std::hash::{BuildHasher, Hasher};

/// Largest table load; past it linear probing degrades quickly.
const MAX_LOAD_NUM: usize = 3;
const MAX_LOAD_DEN: usize = 5;
/// Filter bits per distinct RPI: ~1 % false positives with 8 bits set per key in 256-bit blocks.
const FILTER_BITS_PER_KEY: usize = 10;
/// Odd multipliers choosing one bit per 32-bit word of a filter block (Apache Parquet's
/// split-block Bloom filter constants).
const FILTER_SALT: [u32; 8] = [
    0x47b6_137b,
    0x4497_4d91,
    0x8824_ad5b,
    0xa2b7_289d,
    0x7054_95c7,
    0x2df1_424b,
    0x9efc_4947,
    0x5c6b_fb31,
];
/// Probes whose filter blocks are prefetched together: enough to cover memory latency with the
/// misses a core keeps in flight, small enough for the chunk's state (2.5 KiB) to stay in L1.
const BATCH: usize = 64;

/// More rows than row ids can address.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("cannot index {0} rows: at most {max} rows per index", max = u32::MAX - 1)]
pub struct TooManyRows(pub usize);

/// Maps each distinct RPI to the row ids (positions in the slice it was built from) holding it.
pub struct RpiIndex {
    seed: u64,
    /// Split-block Bloom filter over the distinct RPIs, 8 words per block.
    filter: Box<[[u32; 8]]>,
    /// Open-addressing table, one slot per distinct RPI.
    slots: Box<[Slot]>,
    /// Row ids of the RPIs stored in more than one row, in runs (see [`Slot`]).
    shared_rows: Box<[u32]>,
    rows: usize,
    distinct: usize,
}

/// One distinct RPI and where its rows are: the whole entry is one (at most two) cache lines,
/// so a hit costs one miss, or two when the RPI is stored in several rows.
#[derive(Clone, Copy, Default)]
#[repr(C)]
struct Slot {
    /// The RPI's first and last 8 bytes.
    head: u64,
    tail: u64,
    /// The row itself when `len == 1`, else the run's start in `shared_rows`.
    start: u32,
    /// Rows holding the RPI; 0 marks an empty slot.
    len: u32,
}

impl std::fmt::Debug for RpiIndex {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RpiIndex")
            .field("rows", &self.rows)
            .field("distinct", &self.distinct)
            .field("slots", &self.slots.len())
            .finish()
    }
}

#[inline(always)]
fn tag_of(rpi: &Rpi) -> u64 {
    let b = rpi.as_bytes();
    u64::from_le_bytes([b[0], b[1], b[2], b[3], b[4], b[5], b[6], b[7]])
}

/// The RPI's other 8 bytes, so the filter's hash is independent of the table slot's.
#[inline(always)]
fn filter_key(rpi: &Rpi) -> u64 {
    let b = rpi.as_bytes();
    u64::from_le_bytes([b[8], b[9], b[10], b[11], b[12], b[13], b[14], b[15]])
}

/// The 8 bits (one per word) a filter hash sets in its block.
#[inline(always)]
fn filter_mask(hash: u64) -> [u32; 8] {
    let x = hash as u32;
    FILTER_SALT.map(|salt| 1u32 << (x.wrapping_mul(salt) >> 27))
}

/// Block of a filter hash: the high 32 bits scaled onto `blocks` (no power of two needed).
#[inline(always)]
fn filter_block(hash: u64, blocks: usize) -> usize {
    (((hash >> 32) * blocks as u64) >> 32) as usize
}

/// The table slot of a hash: `hash / 2^64` scaled onto `slots` (Lemire's multiply-shift, so
/// the table size needs not be a power of two).
#[inline(always)]
fn home_slot(hash: u64, slots: usize) -> usize {
    ((u128::from(hash) * slots as u128) >> 64) as usize
}

/// The slot after `slot`, wrapping around (linear probing).
#[inline(always)]
fn next_slot(slot: usize, slots: usize) -> usize {
    if slot + 1 == slots { 0 } else { slot + 1 }
}

/// MurmurHash3's 64-bit finaliser over the seeded tag: full avalanche in a few cycles.
#[inline(always)]
fn mix(tag: u64, seed: u64) -> u64 {
    let mut x = tag ^ seed;
    x ^= x >> 33;
    x = x.wrapping_mul(0xff51_afd7_ed55_8ccd);
    x ^= x >> 33;
    x = x.wrapping_mul(0xc4ce_b9fe_1a85_ec53);
    x ^ (x >> 33)
}

impl RpiIndex {
    /// Indexes `rpis`, whose positions become the row ids.
    pub fn build(rpis: &[Rpi]) -> Result<Self, TooManyRows> {
        if rpis.len() >= u32::MAX as usize {
            return Err(TooManyRows(rpis.len()));
        }
        // Group equal RPIs: sort (RPI halves, row) in place. Sorting the values themselves (24
        // bytes) rather than row ids compared through the RPIs they point to avoids a cache
        // miss per comparison: 3-4x faster at millions of rows. Equal RPIs end up together,
        // their rows ascending.
        let mut sorted: Vec<(u64, u64, u32)> = rpis
            .iter()
            .enumerate()
            .map(|(row, rpi)| (tag_of(rpi), filter_key(rpi), row as u32))
            .collect();
        sorted.sort_unstable();
        let rows: Vec<u32> = sorted.iter().map(|s| s.2).collect();
        let mut groups: Vec<(u64, u64, u32, u32)> = Vec::new(); // (head, tail, start, len)
        for (i, &(head, tail, _)) in sorted.iter().enumerate() {
            match groups.last_mut() {
                Some((h, t, _, len)) if (*h, *t) == (head, tail) => *len += 1,
                _ => groups.push((head, tail, i as u32, 1)),
            }
        }
        drop(sorted);

        // Exactly as many slots as the load factor asks (not a power of two: at millions of
        // RPIs rounding up wastes up to half the table); a hash maps onto them by a multiply.
        let slot_count = (groups.len() * MAX_LOAD_DEN).div_ceil(MAX_LOAD_NUM).max(16);
        // A fresh random seed per index, from the standard library's per-process random keys.
        let seed = std::collections::hash_map::RandomState::new()
            .build_hasher()
            .finish();
        let blocks = (groups.len() * FILTER_BITS_PER_KEY).div_ceil(256).max(1);
        let mut filter = vec![[0u32; 8]; blocks].into_boxed_slice();
        let mut slots = vec![Slot::default(); slot_count].into_boxed_slice();
        let mut shared_rows = Vec::new();
        for &(head, tail, start, len) in &groups {
            let mut slot = home_slot(mix(head, seed), slot_count);
            while slots[slot].len != 0 {
                slot = next_slot(slot, slot_count);
            }
            let start = if len == 1 {
                rows[start as usize]
            } else {
                shared_rows.extend_from_slice(&rows[start as usize..(start + len) as usize]);
                (shared_rows.len() - len as usize) as u32
            };
            slots[slot] = Slot {
                head,
                tail,
                start,
                len,
            };
            let hash = mix(tail, !seed);
            let block = &mut filter[filter_block(hash, blocks)];
            for (word, bit) in block.iter_mut().zip(filter_mask(hash)) {
                *word |= bit;
            }
        }
        Ok(Self {
            seed,
            filter,
            slots,
            shared_rows: shared_rows.into_boxed_slice(),
            rows: rows.len(),
            distinct: groups.len(),
        })
    }

    /// Number of rows indexed.
    pub fn len(&self) -> usize {
        self.rows
    }

    /// Whether no row is indexed.
    pub fn is_empty(&self) -> bool {
        self.rows == 0
    }

    /// Number of distinct RPIs.
    pub fn distinct(&self) -> usize {
        self.distinct
    }

    /// Bytes of memory the index holds.
    pub fn memory_bytes(&self) -> usize {
        self.filter.len() * 32
            + self.slots.len() * std::mem::size_of::<Slot>()
            + self.shared_rows.len() * 4
    }

    #[inline(always)]
    fn home(&self, tag: u64) -> usize {
        home_slot(mix(tag, self.seed), self.slots.len())
    }

    #[inline(always)]
    fn filter_hash(&self, rpi: &Rpi) -> (usize, u64) {
        let hash = mix(filter_key(rpi), !self.seed);
        (filter_block(hash, self.filter.len()), hash)
    }

    /// False: certainly absent. True: present, or a ~1 % false positive.
    #[inline(always)]
    fn may_contain(&self, block: usize, hash: u64) -> bool {
        // Branch-free: an early exit at the first clear bit would mispredict on about every
        // other probe (measured: a third of the lookup's cost). One branch remains, on the
        // result, which is almost always "absent" and so well predicted.
        let words = &self.filter[block];
        let missing = words
            .iter()
            .zip(filter_mask(hash))
            .fold(0u32, |acc, (word, bit)| acc | (bit & !word));
        missing == 0
    }

    fn probe(&self, rpi: &Rpi, head: u64, mut slot: usize) -> &[u32] {
        let tail = filter_key(rpi);
        loop {
            let entry = &self.slots[slot];
            if entry.len == 0 {
                return &[];
            }
            if entry.head == head && entry.tail == tail {
                return if entry.len == 1 {
                    std::slice::from_ref(&entry.start)
                } else {
                    let start = entry.start as usize;
                    &self.shared_rows[start..start + entry.len as usize]
                };
            }
            slot = next_slot(slot, self.slots.len());
        }
    }

    /// Row ids holding `rpi`, in ascending order; empty if it was never stored.
    pub fn rows(&self, rpi: &Rpi) -> &[u32] {
        let (block, hash) = self.filter_hash(rpi);
        if !self.may_contain(block, hash) {
            return &[];
        }
        let tag = tag_of(rpi);
        self.probe(rpi, tag, self.home(tag))
    }

    /// Whether `rpi` is stored.
    pub fn contains(&self, rpi: &Rpi) -> bool {
        !self.rows(rpi).is_empty()
    }

    /// Looks up every probe, calling `on_hit(probe_position, rows)` for each stored one, in
    /// probe order. Much faster than calling [`rows`](Self::rows) in a loop on large indexes:
    /// per chunk of probes it prefetches their filter blocks, tests them, prefetches the table
    /// slots of those that pass, then probes those, so the cache misses of a chunk overlap.
    pub fn lookup_batch(&self, probes: &[Rpi], mut on_hit: impl FnMut(usize, &[u32])) {
        #[cfg(target_arch = "x86_64")]
        if std::arch::is_x86_feature_detected!("avx2") {
            // SAFETY: the CPU supports AVX2, checked just above.
            unsafe { self.lookup_batch_avx2(probes, &mut on_hit) };
            return;
        }
        self.lookup_batch_generic(probes, &mut on_hit);
    }

    /// [`lookup_batch`](Self::lookup_batch) compiled for AVX2, which turns a filter test into a
    /// handful of vector instructions (x86-64's baseline, SSE2, has no per-lane shifts).
    ///
    /// # Safety
    /// The CPU must support AVX2.
    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "avx2")]
    unsafe fn lookup_batch_avx2(&self, probes: &[Rpi], on_hit: &mut impl FnMut(usize, &[u32])) {
        self.lookup_batch_generic(probes, on_hit);
    }

    #[inline(always)]
    fn lookup_batch_generic(&self, probes: &[Rpi], on_hit: &mut impl FnMut(usize, &[u32])) {
        let mut filter = [(0usize, 0u64); BATCH];
        let mut passed = [(0usize, 0u64, 0usize); BATCH];
        for (chunk_no, chunk) in probes.chunks(BATCH).enumerate() {
            for (i, rpi) in chunk.iter().enumerate() {
                filter[i] = self.filter_hash(rpi);
                prefetch(&self.filter[filter[i].0]);
            }
            let mut n = 0;
            for (i, rpi) in chunk.iter().enumerate() {
                let (block, hash) = filter[i];
                if self.may_contain(block, hash) {
                    let tag = tag_of(rpi);
                    let slot = self.home(tag);
                    prefetch(&self.slots[slot]);
                    passed[n] = (i, tag, slot);
                    n += 1;
                }
            }
            for &(i, tag, slot) in &passed[..n] {
                let rows = self.probe(&chunk[i], tag, slot);
                if !rows.is_empty() {
                    on_hit(chunk_no * BATCH + i, rows);
                }
            }
        }
    }

    /// How many of `probes` are stored (each probe counted once).
    pub fn count_hits(&self, probes: &[Rpi]) -> usize {
        let mut hits = 0;
        self.lookup_batch(probes, |_, _| hits += 1);
        hits
    }
}

/// Asks the CPU to start loading the cache line holding `value`; a hint with no effect on
/// results, so a platform without an implementation simply skips it.
#[inline(always)]
fn prefetch<T>(value: &T) {
    let ptr = value as *const T;
    #[cfg(target_arch = "x86_64")]
    // SAFETY: prefetch is a hint that never faults, and `ptr` comes from a live reference.
    unsafe {
        core::arch::x86_64::_mm_prefetch::<{ core::arch::x86_64::_MM_HINT_T0 }>(ptr.cast());
    }
    #[cfg(target_arch = "aarch64")]
    // SAFETY: PRFM is a hint that never faults; it reads no memory architecturally.
    unsafe {
        core::arch::asm!("prfm pldl1keep, [{0}]", in(reg) ptr, options(nostack, readonly, preserves_flags));
    }
    #[cfg(not(any(target_arch = "x86_64", target_arch = "aarch64")))]
    let _ = ptr;
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crypto::{Enin, Tek};

    fn rpis(n: usize) -> Vec<Rpi> {
        Tek::from_bytes([3; 16]).rpik().cipher().derive(Enin(0), n)
    }

    /// Every stored RPI is found with its rows; absent ones are not.
    #[test]
    fn finds_stored_and_rejects_absent() {
        let stored = rpis(1000);
        let index = RpiIndex::build(&stored).expect("small index");
        for (row, rpi) in stored.iter().enumerate() {
            assert_eq!(index.rows(rpi), &[row as u32]);
        }
        let absent = Tek::from_bytes([4; 16])
            .rpik()
            .cipher()
            .derive(Enin(0), 1000);
        assert!(absent.iter().all(|rpi| !index.contains(rpi)));
        assert_eq!(index.distinct(), 1000);
    }

    /// One RPI stored in several rows maps to all of them, in order.
    #[test]
    fn duplicate_rpis_map_to_all_rows() {
        let r = rpis(3);
        let stored = vec![r[0], r[1], r[0], r[2], r[0]];
        let index = RpiIndex::build(&stored).expect("small index");
        assert_eq!(index.rows(&r[0]), &[0, 2, 4]);
        assert_eq!(index.rows(&r[2]), &[3]);
        assert_eq!((index.len(), index.distinct()), (5, 3));
    }

    /// RPIs sharing their first 8 bytes (same tag) are told apart by the full comparison.
    #[test]
    fn equal_tags_are_disambiguated() {
        let mut a = [9u8; 16];
        let mut b = [9u8; 16];
        a[15] = 1;
        b[15] = 2;
        let stored = vec![Rpi::from_bytes(a), Rpi::from_bytes(b)];
        let index = RpiIndex::build(&stored).expect("small index");
        assert_eq!(index.rows(&Rpi::from_bytes(b)), &[1]);
        assert_eq!(index.rows(&Rpi::from_bytes([9; 16])), &[] as &[u32]);
        // A zero RPI must not read as an empty slot.
        let index = RpiIndex::build(&[Rpi::from_bytes([0; 16])]).expect("small index");
        assert!(index.contains(&Rpi::from_bytes([0; 16])));
    }

    /// Batched lookup reports exactly what single lookups report, with probe positions.
    #[test]
    fn batch_lookup_equals_single_lookups() {
        let stored = rpis(500);
        let index = RpiIndex::build(&stored[..250]).expect("small index");
        let mut hits = Vec::new();
        index.lookup_batch(&stored, |i, rows| hits.push((i, rows.to_vec())));
        let expected: Vec<_> = (0..250).map(|i| (i, vec![i as u32])).collect();
        assert_eq!(hits, expected);
        assert_eq!(index.count_hits(&stored), 250);
    }

    /// The filter passes every stored RPI and rejects nearly all others (the ~1 % design rate,
    /// checked with a generous bound so the test is stable).
    #[test]
    fn filter_has_no_false_negatives_and_few_false_positives() {
        let stored = rpis(20_000);
        let index = RpiIndex::build(&stored).expect("index");
        for rpi in &stored {
            let (block, hash) = index.filter_hash(rpi);
            assert!(index.may_contain(block, hash));
        }
        let others = Tek::from_bytes([5; 16])
            .rpik()
            .cipher()
            .derive(Enin(0), 100_000);
        let false_positives = others
            .iter()
            .filter(|rpi| {
                let (block, hash) = index.filter_hash(rpi);
                index.may_contain(block, hash)
            })
            .count();
        assert!(
            false_positives < 2_500,
            "{false_positives} false positives in 100000"
        );
    }

    /// Batched lookups report exactly what single lookups report, in probe order, across
    /// chunk boundaries (the probe count is not a multiple of the chunk size).
    #[test]
    fn batched_lookup_equals_single_lookups() {
        let stored = random_rpis(200_000, 1);
        let index = RpiIndex::build(&stored).expect("index");
        let mut probes = random_rpis(100_000 + BATCH / 2 + 1, 2);
        for i in (0..probes.len()).step_by(97) {
            probes[i] = stored[(i * 31) % stored.len()];
        }
        let expected: Vec<(usize, Vec<u32>)> = probes
            .iter()
            .enumerate()
            .filter_map(|(i, rpi)| {
                Some((i, index.rows(rpi).to_vec())).filter(|(_, r)| !r.is_empty())
            })
            .collect();
        let mut hits = Vec::new();
        index.lookup_batch(&probes, |i, rows| hits.push((i, rows.to_vec())));
        assert_eq!(hits.len(), probes.len().div_ceil(97));
        assert_eq!(hits, expected);
    }

    fn random_rpis(n: usize, key_byte: u8) -> Vec<Rpi> {
        let mut out = Vec::with_capacity(n);
        for k in 0u32.. {
            if out.len() >= n {
                break;
            }
            let mut tek = [key_byte; 16];
            tek[..4].copy_from_slice(&k.to_le_bytes());
            out.extend(
                Tek::from_bytes(tek)
                    .rpik()
                    .cipher()
                    .derive(Enin(0), (n - out.len()).min(144)),
            );
        }
        out
    }

    /// An empty index answers every lookup with "absent".
    #[test]
    fn empty_index() {
        let index = RpiIndex::build(&[]).expect("empty index");
        assert!(index.is_empty());
        assert_eq!(index.count_hits(&rpis(100)), 0);
    }
}
