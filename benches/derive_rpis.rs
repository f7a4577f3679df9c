//! `derive_rpis`: TEK → RPIK (HKDF-SHA256) → all 144 RPIs of a day (AES-128, one key schedule
//! per key). This is the inner loop of matching: every diagnosis key is expanded this way.
//!
//! Run: `cargo bench --bench derive_rpis`; the Python `cryptography` baseline of the same work is
//! `python3 benches/derive_rpis_baseline.py`, and `scripts/bench` runs both and prints the ratio.
//! Results and the machine they were measured on: docs/performance.md.

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use std::hint::black_box;
use venuetrace::crypto::{Enin, Rpi, Tek};

const KEYS: usize = 1024;

fn teks() -> Vec<Tek> {
    // Distinct, unpredictable-looking keys without a RNG dependency: RPIs of a fixed key.
    Tek::from_bytes([0x5a; 16])
        .rpik()
        .cipher()
        .derive(Enin(0), KEYS)
        .iter()
        .map(|rpi| Tek::from_bytes(*rpi.as_bytes()))
        .collect()
}

fn derive_rpis(c: &mut Criterion) {
    let teks = teks();
    let mut out = [Rpi::from_bytes([0; 16]); 144];
    let mut group = c.benchmark_group("derive_rpis");
    group.throughput(Throughput::Elements(KEYS as u64));
    group.bench_function("tek_to_144_rpis", |b| {
        b.iter(|| {
            for tek in &teks {
                black_box(tek)
                    .rpik()
                    .cipher()
                    .derive_into(Enin(2_642_976), &mut out);
                black_box(&out);
            }
        })
    });
    group.bench_function("rpik_only", |b| {
        b.iter(|| {
            for tek in &teks {
                black_box(black_box(tek).rpik());
            }
        })
    });
    let rpiks: Vec<_> = teks.iter().map(Tek::rpik).collect();
    group.bench_function("rpis_from_rpik", |b| {
        b.iter(|| {
            for rpik in &rpiks {
                black_box(rpik)
                    .cipher()
                    .derive_into(Enin(2_642_976), &mut out);
                black_box(&out);
            }
        })
    });
    group.finish();
}

criterion_group!(benches, derive_rpis);
criterion_main!(benches);
