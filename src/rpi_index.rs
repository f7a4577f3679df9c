//! The RPI index: from a Rolling Proximity Identifier to every stored row that carries it.
//!
//! Matching derives the RPIs of every diagnosis key (about 170 per key with the ±2 h
//! tolerance) and asks which of them were seen at a venue. With millions of keys that is
//! hundreds of millions of lookups against tens of millions of stored sightings, almost all of
//! them misses, so the layout is tuned for a fast "no":
//!
//! - a split-block Bloom filter (10 bits per distinct RPI, ~1 % false positives) answers most
//!   misses from one 32-byte block that, at 10 M RPIs (12.5 MB), stays in the last-level cache.
//!   Without it every lookup is a DRAM miss in a table of hundreds of MB: measured 20 M
//!   lookups/s per core with prefetching, against 75 M/s needed (docs/performance.md);
//! - behind it, an open-addressing table of 8-byte tags (the RPI's first 8 bytes, `| 1` so 0
//!   means empty), at most 60 % full, probed linearly: a lookup usually costs one cache line;
//! - the slot is chosen by a seeded 64-bit mixer, not the raw tag: RPIs arrive from radios, so
//!   an attacker can broadcast chosen RPIs; a per-index random seed keeps them from piling up
//!   in one probe run;
//! - a hit is confirmed against the full 16-byte RPI, then maps to a run of row ids (one RPI
//!   seen in many windows or venues is stored once);
//! - [`RpiIndex::lookup_batch`] works like a radix-partitioned hash join on large batches: it
//!   scatters the probes by filter region (each region small enough to stay in L2 while its
//!   probes are tested), tests the filter region by region, and sends the few that pass to
//!   the table with prefetching, so their misses overlap. Small batches skip the partitioning
//!   and only prefetch.
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
/// Probes partitioned together by [`RpiIndex::lookup_batch`]: large enough that each filter
/// region is reused by many probes once loaded, small enough for the scatter buffers (12 bytes
/// per probe) to stay modest.
const PARTITION_BATCH: usize = 1 << 20;
/// Filter bytes per partition: a region this size stays in L2 (512 KiB per core on a Cortex-A76,
/// 1 MiB on Zen 4) while its probes are tested.
const PARTITION_FILTER_BYTES: usize = 256 << 10;
/// Below this many filter blocks the whole filter stays in cache; partitioning would only cost.
const PARTITION_MIN_BLOCKS: usize = (2 << 20) / 32;
/// Probes whose slots are prefetched together. Enough to cover memory latency with the number
/// of misses a core keeps in flight (10–20), small enough for the batch state to stay in L1.
const BATCH: usize = 32;

/// More rows than row ids can address.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("cannot index {0} rows: at most {max} rows per index", max = u32::MAX - 1)]
pub struct TooManyRows(pub usize);

/// Maps each distinct RPI to the row ids (positions in the slice it was built from) holding it.
pub struct RpiIndex {
    seed: u64,
    shift: u32,
    /// Split-block Bloom filter over the distinct RPIs, 8 words per block.
    filter: Box<[[u32; 8]]>,
    /// Tag per slot, 0 = empty.
    tags: Box<[u64]>,
    /// Group id per slot (valid where the tag is non-zero).
    slot_group: Box<[u32]>,
    /// Distinct RPIs, by group id.
    group_rpi: Box<[Rpi]>,
    /// `rows[group_start[g]..group_start[g + 1]]` are the rows of group `g`.
    group_start: Box<[u32]>,
    rows: Box<[u32]>,
}

impl std::fmt::Debug for RpiIndex {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RpiIndex")
            .field("rows", &self.rows.len())
            .field("distinct", &self.group_rpi.len())
            .field("slots", &self.tags.len())
            .finish()
    }
}

fn tag_of(rpi: &Rpi) -> u64 {
    let b = rpi.as_bytes();
    u64::from_le_bytes([b[0], b[1], b[2], b[3], b[4], b[5], b[6], b[7]]) | 1
}

/// The RPI's other 8 bytes, so the filter's hash is independent of the table slot's.
fn filter_key(rpi: &Rpi) -> u64 {
    let b = rpi.as_bytes();
    u64::from_le_bytes([b[8], b[9], b[10], b[11], b[12], b[13], b[14], b[15]])
}

/// The 8 bits (one per word) a filter hash sets in its block.
fn filter_mask(hash: u64) -> [u32; 8] {
    let x = hash as u32;
    FILTER_SALT.map(|salt| 1u32 << (x.wrapping_mul(salt) >> 27))
}

/// Block of a filter hash: the high 32 bits scaled onto `blocks` (no power of two needed).
fn filter_block(hash: u64, blocks: usize) -> usize {
    (((hash >> 32) * blocks as u64) >> 32) as usize
}

/// MurmurHash3's 64-bit finaliser over the seeded tag: full avalanche in a few cycles.
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
        // Group equal RPIs: sort row ids by RPI. Sorting row ids (4 bytes) rather than RPIs keeps
        // the moved data small; RPIs are uniform, so comparisons end in the first byte or two.
        let mut rows: Vec<u32> = (0..rpis.len() as u32).collect();
        rows.sort_unstable_by(|&a, &b| rpis[a as usize].cmp(&rpis[b as usize]));
        let mut group_rpi = Vec::new();
        let mut group_start = Vec::new();
        for (i, &row) in rows.iter().enumerate() {
            let rpi = rpis[row as usize];
            if group_rpi.last() != Some(&rpi) {
                group_rpi.push(rpi);
                group_start.push(i as u32);
            }
        }
        group_start.push(rows.len() as u32);

        let wanted = (group_rpi.len() * MAX_LOAD_DEN)
            .div_ceil(MAX_LOAD_NUM)
            .max(16);
        let slots = wanted.next_power_of_two();
        let shift = 64 - slots.trailing_zeros();
        // A fresh random seed per index, from the standard library's per-process random keys.
        let seed = std::collections::hash_map::RandomState::new()
            .build_hasher()
            .finish();
        let blocks = (group_rpi.len() * FILTER_BITS_PER_KEY).div_ceil(256).max(1);
        let mut filter = vec![[0u32; 8]; blocks].into_boxed_slice();
        let mut tags = vec![0u64; slots].into_boxed_slice();
        let mut slot_group = vec![0u32; slots].into_boxed_slice();
        let mask = slots - 1;
        for (group, rpi) in group_rpi.iter().enumerate() {
            let tag = tag_of(rpi);
            let mut slot = (mix(tag, seed) >> shift) as usize;
            while tags[slot] != 0 {
                slot = (slot + 1) & mask;
            }
            tags[slot] = tag;
            slot_group[slot] = group as u32;
            let hash = mix(filter_key(rpi), !seed);
            let block = &mut filter[filter_block(hash, blocks)];
            for (word, bit) in block.iter_mut().zip(filter_mask(hash)) {
                *word |= bit;
            }
        }
        Ok(Self {
            seed,
            shift,
            filter,
            tags,
            slot_group,
            group_rpi: group_rpi.into_boxed_slice(),
            group_start: group_start.into_boxed_slice(),
            rows: rows.into_boxed_slice(),
        })
    }

    /// Number of rows indexed.
    pub fn len(&self) -> usize {
        self.rows.len()
    }

    /// Whether no row is indexed.
    pub fn is_empty(&self) -> bool {
        self.rows.is_empty()
    }

    /// Number of distinct RPIs.
    pub fn distinct(&self) -> usize {
        self.group_rpi.len()
    }

    /// Bytes of memory the index holds.
    pub fn memory_bytes(&self) -> usize {
        self.filter.len() * 32
            + self.tags.len() * 8
            + self.slot_group.len() * 4
            + self.group_rpi.len() * Rpi::LEN
            + self.group_start.len() * 4
            + self.rows.len() * 4
    }

    fn home(&self, tag: u64) -> usize {
        (mix(tag, self.seed) >> self.shift) as usize
    }

    fn filter_hash(&self, rpi: &Rpi) -> (usize, [u32; 8]) {
        let hash = mix(filter_key(rpi), !self.seed);
        (filter_block(hash, self.filter.len()), filter_mask(hash))
    }

    /// False: certainly absent. True: present, or a ~1 % false positive.
    fn may_contain(&self, block: usize, mask: &[u32; 8]) -> bool {
        let words = &self.filter[block];
        words.iter().zip(mask).all(|(word, bit)| word & bit != 0)
    }

    fn probe(&self, rpi: &Rpi, tag: u64, mut slot: usize) -> &[u32] {
        let mask = self.tags.len() - 1;
        loop {
            let t = self.tags[slot];
            if t == 0 {
                return &[];
            }
            if t == tag {
                let group = self.slot_group[slot] as usize;
                if self.group_rpi[group] == *rpi {
                    let start = self.group_start[group] as usize;
                    let end = self.group_start[group + 1] as usize;
                    return &self.rows[start..end];
                }
            }
            slot = (slot + 1) & mask;
        }
    }

    /// Row ids holding `rpi`, in ascending order; empty if it was never stored.
    pub fn rows(&self, rpi: &Rpi) -> &[u32] {
        let (block, mask) = self.filter_hash(rpi);
        if !self.may_contain(block, &mask) {
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
    /// probe order. Much faster than calling [`rows`](Self::rows) in a loop on large indexes
    /// (see the module documentation for how).
    pub fn lookup_batch(&self, probes: &[Rpi], mut on_hit: impl FnMut(usize, &[u32])) {
        if self.filter.len() < PARTITION_MIN_BLOCKS || probes.len() < PARTITION_BATCH / 16 {
            self.lookup_prefetched(probes, &mut on_hit);
            return;
        }
        let parts = (self.filter.len() * 32).div_ceil(PARTITION_FILTER_BYTES);
        let mut hashes = Vec::new();
        let mut part_end = vec![0usize; parts];
        let mut scattered_hash = Vec::new();
        let mut scattered_probe = Vec::new();
        let mut candidates = Vec::new();
        for (sub_no, sub) in probes.chunks(PARTITION_BATCH).enumerate() {
            // Pass 1: filter hashes and partition sizes.
            hashes.clear();
            part_end.fill(0);
            for rpi in sub {
                let hash = mix(filter_key(rpi), !self.seed);
                part_end[filter_block(hash, parts)] += 1;
                hashes.push(hash);
            }
            let mut start = 0;
            for end in part_end.iter_mut() {
                start += *end;
                *end = start;
            }
            // Pass 2: scatter, filling each partition from its end.
            scattered_hash.resize(sub.len(), 0u64);
            scattered_probe.resize(sub.len(), 0u32);
            for (i, &hash) in hashes.iter().enumerate() {
                let end = &mut part_end[filter_block(hash, parts)];
                *end -= 1;
                scattered_hash[*end] = hash;
                scattered_probe[*end] = i as u32;
            }
            // Pass 3: test the filter partition by partition (each region stays in L2).
            candidates.clear();
            for (&hash, &i) in scattered_hash.iter().zip(&scattered_probe) {
                if self.may_contain(filter_block(hash, self.filter.len()), &filter_mask(hash)) {
                    candidates.push(i);
                }
            }
            // Pass 4: the few that passed, in probe order, through the table.
            candidates.sort_unstable();
            let base = sub_no * PARTITION_BATCH;
            for batch in candidates.chunks(BATCH) {
                let mut slots = [(0u64, 0usize); BATCH];
                for (slot, &i) in slots.iter_mut().zip(batch) {
                    let tag = tag_of(&sub[i as usize]);
                    *slot = (tag, self.home(tag));
                    prefetch(&self.tags[slot.1]);
                }
                for (&(tag, slot), &i) in slots.iter().zip(batch) {
                    let rows = self.probe(&sub[i as usize], tag, slot);
                    if !rows.is_empty() {
                        on_hit(base + i as usize, rows);
                    }
                }
            }
        }
    }

    /// [`lookup_batch`](Self::lookup_batch) for small batches or small indexes: per chunk of
    /// probes, prefetch their filter blocks, test them and prefetch the table slots of those
    /// that pass, then probe those.
    fn lookup_prefetched(&self, probes: &[Rpi], on_hit: &mut impl FnMut(usize, &[u32])) {
        let mut filter = [(0usize, [0u32; 8]); BATCH];
        let mut passed = [(0usize, 0u64, 0usize); BATCH];
        for (chunk_no, chunk) in probes.chunks(BATCH).enumerate() {
            for (i, rpi) in chunk.iter().enumerate() {
                filter[i] = self.filter_hash(rpi);
                prefetch(&self.filter[filter[i].0]);
            }
            let mut n = 0;
            for (i, rpi) in chunk.iter().enumerate() {
                let (block, mask) = &filter[i];
                if self.may_contain(*block, mask) {
                    let tag = tag_of(rpi);
                    let slot = self.home(tag);
                    prefetch(&self.tags[slot]);
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
        // A zero RPI has tag 0 | 1 and must not read as an empty slot.
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
            let (block, mask) = index.filter_hash(rpi);
            assert!(index.may_contain(block, &mask));
        }
        let others = Tek::from_bytes([5; 16])
            .rpik()
            .cipher()
            .derive(Enin(0), 100_000);
        let false_positives = others
            .iter()
            .filter(|rpi| {
                let (block, mask) = index.filter_hash(rpi);
                index.may_contain(block, &mask)
            })
            .count();
        assert!(
            false_positives < 2_500,
            "{false_positives} false positives in 100000"
        );
    }

    /// The partitioned path (large index, large batch) reports exactly what single lookups
    /// report, in probe order, across sub-batch boundaries.
    #[test]
    fn partitioned_lookup_equals_single_lookups() {
        let stored = random_rpis(PARTITION_MIN_BLOCKS * 32 / 10 * 8 + 1000, 1);
        let index = RpiIndex::build(&stored).expect("index");
        assert!(index.filter.len() >= PARTITION_MIN_BLOCKS);
        let mut probes = random_rpis(PARTITION_BATCH + 5000, 2);
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
