//! `rpi_lookup`: membership of derived RPIs in an index of 10 M stored RPIs (the join at the
//! heart of matching).
//!
//! - `match_loop_*`: the way matching uses the index. Fresh keys, 256 at a time: derive their
//!   144 RPIs each into one buffer, look the buffer up, next chunk. No probe is looked up twice,
//!   and `derive_only` measures the same loop without lookups, so the lookups' own cost is the
//!   difference (scripts/bench prints it). 1 % of the derived RPIs are planted in the index
//!   (matching's reality: nearly every derived RPI was never seen at a venue).
//! - `stream_*`: 1 Mi probes read from a 16 MB array: the probe stream evicts the filter from the
//!   last-level cache, a worst case matching avoids; `all_hits` every probe stored; `single` one
//!   `rows()` call per probe instead of batches.
//!
//! Run: `cargo bench --bench rpi_lookup` (building the index takes ~10 s).
//! `VENUETRACE_BENCH_STORED=N` changes the index size. Results: docs/performance.md.

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use std::hint::black_box;
use venuetrace::crypto::{Enin, Rpi, Tek};
use venuetrace::rpi_index::RpiIndex;

const STREAM_PROBES: usize = 1 << 20;
/// Keys per matching chunk: 256 × 144 RPIs = 590 KB of probes, comfortably inside L2.
const CHUNK_KEYS: usize = 256;
/// Distinct keys derived per benchmark iteration (then the next iteration uses the next ones).
const LOOP_KEYS: usize = 4096;
/// Keys the match loop cycles through (5.9 M RPIs: far more than any cache holds).
const LOOP_KEY_RANGE: usize = 40_960;

fn tek(n: u32, key_byte: u8) -> Tek {
    let mut tek = [key_byte; 16];
    tek[..4].copy_from_slice(&n.to_le_bytes());
    Tek::from_bytes(tek)
}

/// `n` distinct pseudo-random RPIs: the RPIs of consecutive keys, 144 each.
fn random_rpis(n: usize, key_byte: u8) -> Vec<Rpi> {
    let mut out = Vec::with_capacity(n);
    let mut k = 0u32;
    while out.len() < n {
        let take = (n - out.len()).min(144);
        out.extend(tek(k, key_byte).rpik().cipher().derive(Enin(0), take));
        k += 1;
    }
    out
}

fn rpi_lookup(c: &mut Criterion) {
    let stored_n: usize = std::env::var("VENUETRACE_BENCH_STORED")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(10_000_000);
    let mut stored = random_rpis(stored_n, 1);
    // Plant 1 % of the match loop's RPIs: derived RPI number i (key i / 144, interval i % 144)
    // for every i divisible by 100, over the LOOP_KEY_RANGE keys the loop cycles through.
    let planted = (0..(LOOP_KEY_RANGE * 144 / 100) as u32).map(|k| {
        let i = (k * 100) as usize;
        tek((i / 144) as u32, 3)
            .rpik()
            .cipher()
            .rpi(Enin(2_650_000 + (i % 144) as u32))
    });
    for (slot, rpi) in stored.iter_mut().step_by(7).zip(planted) {
        *slot = rpi;
    }
    let index = RpiIndex::build(&stored).expect("index fits in u32 rows");
    eprintln!(
        "rpi_lookup: {} stored RPIs, index {} MiB",
        index.len(),
        index.memory_bytes() >> 20
    );

    let mut group = c.benchmark_group("rpi_lookup");
    group.sample_size(20);
    group.throughput(Throughput::Elements((LOOP_KEYS * 144) as u64));
    let mut buffer = vec![Rpi::from_bytes([0; 16]); CHUNK_KEYS * 144];
    let mut next_key = 0u32;
    let (mut total_hits, mut total_lookups) = (0usize, 0usize);
    group.bench_function("match_loop_1pct_hits", |b| {
        b.iter(|| {
            for _ in 0..LOOP_KEYS / CHUNK_KEYS {
                for rpis in buffer.chunks_mut(144) {
                    tek(next_key, 3)
                        .rpik()
                        .cipher()
                        .derive_into(Enin(2_650_000), rpis);
                    next_key = (next_key + 1) % LOOP_KEY_RANGE as u32;
                }
                total_hits += index.count_hits(black_box(&buffer));
                total_lookups += buffer.len();
            }
        })
    });
    // The planted RPIs are found: ~1 % of lookups hit (checked so the bench cannot be hollow).
    eprintln!(
        "match_loop hit rate: {:.2} %",
        100.0 * total_hits as f64 / total_lookups.max(1) as f64
    );
    group.bench_function("derive_only", |b| {
        b.iter(|| {
            for _ in 0..LOOP_KEYS / CHUNK_KEYS {
                for rpis in buffer.chunks_mut(144) {
                    tek(next_key, 3)
                        .rpik()
                        .cipher()
                        .derive_into(Enin(2_650_000), rpis);
                    next_key = (next_key + 1) % LOOP_KEY_RANGE as u32;
                }
                black_box(&buffer);
            }
        })
    });

    let absent = random_rpis(STREAM_PROBES, 2);
    let mixed: Vec<Rpi> = absent
        .iter()
        .enumerate()
        .map(|(i, rpi)| {
            if i % 100 == 0 {
                stored[(i * 7919) % stored.len()]
            } else {
                *rpi
            }
        })
        .collect();
    let all_hits: Vec<Rpi> = (0..STREAM_PROBES)
        .map(|i| stored[(i * 7919) % stored.len()])
        .collect();
    group.throughput(Throughput::Elements(STREAM_PROBES as u64));
    group.bench_function("stream_1pct_hits", |b| {
        b.iter(|| black_box(index.count_hits(black_box(&mixed))))
    });
    group.bench_function("stream_all_hits", |b| {
        b.iter(|| black_box(index.count_hits(black_box(&all_hits))))
    });
    group.bench_function("stream_single_1pct_hits", |b| {
        b.iter(|| black_box(mixed.iter().filter(|rpi| index.contains(rpi)).count()))
    });
    group.finish();
}

criterion_group!(benches, rpi_lookup);
criterion_main!(benches);
