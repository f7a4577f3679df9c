//! `rpi_lookup`: membership of derived RPIs in an index of 10 M stored RPIs (the join at the
//! heart of matching). Two workloads: 1 % of probes stored, as in matching, where nearly every
//! derived RPI was never seen; and every probe stored, the worst case.
//!
//! Run: `cargo bench --bench rpi_lookup` (building the 10 M index takes a few seconds).
//! `VENUETRACE_BENCH_STORED=N` changes the index size. Results: docs/performance.md.

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use std::hint::black_box;
use venuetrace::crypto::{Enin, Rpi, Tek};
use venuetrace::rpi_index::RpiIndex;

const PROBES: usize = 1 << 20;

/// `n` distinct pseudo-random RPIs: the RPIs of consecutive keys, `per_key` each.
fn random_rpis(n: usize, key_byte: u8) -> Vec<Rpi> {
    let mut out = Vec::with_capacity(n);
    let mut k = 0u32;
    while out.len() < n {
        let mut tek = [key_byte; 16];
        tek[..4].copy_from_slice(&k.to_le_bytes());
        let take = (n - out.len()).min(144);
        out.extend(Tek::from_bytes(tek).rpik().cipher().derive(Enin(0), take));
        k += 1;
    }
    out
}

fn rpi_lookup(c: &mut Criterion) {
    let stored_n: usize = std::env::var("VENUETRACE_BENCH_STORED")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(10_000_000);
    let stored = random_rpis(stored_n, 1);
    let index = RpiIndex::build(&stored).expect("index fits in u32 rows");
    eprintln!(
        "rpi_lookup: {} stored RPIs, index {} MiB",
        index.len(),
        index.memory_bytes() >> 20
    );
    let absent = random_rpis(PROBES, 2);
    // 1 % hits, spread evenly through the probes.
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
    let all_hits: Vec<Rpi> = (0..PROBES)
        .map(|i| stored[(i * 7919) % stored.len()])
        .collect();

    let mut group = c.benchmark_group("rpi_lookup");
    group.throughput(Throughput::Elements(PROBES as u64));
    group.sample_size(20);
    group.bench_function("batch_1pct_hits", |b| {
        b.iter(|| black_box(index.count_hits(black_box(&mixed))))
    });
    group.bench_function("batch_all_hits", |b| {
        b.iter(|| black_box(index.count_hits(black_box(&all_hits))))
    });
    group.bench_function("single_1pct_hits", |b| {
        b.iter(|| black_box(mixed.iter().filter(|rpi| index.contains(rpi)).count()))
    });
    group.finish();
}

criterion_group!(benches, rpi_lookup);
criterion_main!(benches);
