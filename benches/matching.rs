//! `matching`: the authority's exposure matching, end to end on a scaled-down day: 100 k
//! diagnosis keys against 10 M stored sightings (issue target: 3 M keys against 1e8 sightings in
//! ≤ 10 s on 2 cores).
//!
//! Everything is real crypto. Stored sightings are the RPIs of other TEKs (one "phone" per
//! filler TEK, heard at a random venue in each of its 144 intervals, 3 minutes each, random
//! AEM); 1 % of the keys' derived RPIs are planted as sightings with a real AEM (metadata 1.0,
//! TX −12 dBm) at random venues, so the decrypt, window and scoring paths run on ~144 k hits.
//! Sightings and keys are spread over `VENUETRACE_BENCH_DAYS` UTC days (default 2: ~5 M
//! sightings per day part, about the target's 1e8 over 14–21 days), and ordered by window and
//! venue as the store returns them (a batch is one gateway window). Each planted hit is at a
//! random venue, so the run has ~144 k exposure events and ~105 k venue-hours to count
//! co-presence in: far more than a real day, a stress test of that step.
//!
//! - `match/threads_2`, `match/threads_1`: [`SightingIndex::match_keys`] over all keys (derive,
//!   look up, decrypt, windows, scores, venue hours with co-presence), index prebuilt.
//! - `match/join_only_threads_2`: the same with keys of which nothing was stored: the join
//!   alone (derive, look up), the part that grows with the number of keys.
//! - Printed after the runs: index build time (the sightings copied into one compact table per
//!   UTC day, then indexed), keys/s, derived-RPI lookups/s, and the extrapolation to the
//!   target. The target itself is measured at full scale by `examples/match_scale.rs`.
//!
//! The printed summary takes the best of 8 rounds (other work on the machine only slows runs
//! down); criterion's own figures include any such interference.
//!
//! Run: `cargo bench --bench matching` (~1 min after the build; setup ~10 s). Sizes:
//! `VENUETRACE_BENCH_KEYS`, `VENUETRACE_BENCH_SIGHTINGS`, `VENUETRACE_BENCH_DAYS`. Results:
//! docs/performance.md.

use criterion::{Criterion, SamplingMode, Throughput, criterion_group, criterion_main};
use std::hint::black_box;
use std::time::Instant;
use venuetrace::aggregate::MinuteRssi;
use venuetrace::crypto::{Aem, Enin, Metadata, RollingPeriod, Tek};
use venuetrace::export::DiagnosisKey;
use venuetrace::matching::{MatchKey, RiskConfig, SightingIndex, VenueSighting};

/// 2025-06-02, the first simulated day.
const FIRST_DAY: u32 = 20_241;
const TARGET_KEYS: f64 = 3e6;
const TARGET_SIGHTINGS: f64 = 1e8;
const TARGET_SECONDS: f64 = 10.0;

fn env(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// SplitMix64: reproducible venues and RSSI without a dependency on `rand`'s API.
fn mix(mut z: u64) -> u64 {
    z = z.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

fn tek(n: u32, tag: u8) -> Tek {
    let mut bytes = [tag; 16];
    bytes[..4].copy_from_slice(&n.to_le_bytes());
    Tek::from_bytes(bytes)
}

fn minutes(seed: u64, first: u8) -> Vec<MinuteRssi> {
    (first..first + 3)
        .map(|minute| {
            let mean = -50 - (mix(seed ^ u64::from(minute)) % 45) as i8;
            MinuteRssi {
                minute,
                count: 20,
                min: mean - 6,
                mean,
                max: mean + 5,
            }
        })
        .collect()
}

fn scenario(keys_n: usize, sightings_n: usize, days: u32) -> (Vec<MatchKey>, Vec<VenueSighting>) {
    let keys: Vec<MatchKey> = (0..keys_n as u32)
        .map(|k| MatchKey {
            id: u64::from(k),
            key: DiagnosisKey {
                tek: tek(k, 3),
                transmission_risk_level: None,
                rolling_start: Enin((FIRST_DAY + k % days) * 144),
                rolling_period: RollingPeriod::DAY,
                report_type: None,
                days_since_onset_of_symptoms: None,
            },
        })
        .collect();
    let mut sightings = Vec::with_capacity(sightings_n);
    // Planted: derived RPI number j (key j / 144, interval j % 144) for every j divisible by 100.
    for k in &keys {
        let (rpik, aemk) = k.key.tek.keys();
        let cipher = rpik.cipher();
        for i in 0..144u32 {
            let j = k.id * 144 + u64::from(i);
            if j % 100 != 0 || sightings.len() >= sightings_n {
                continue;
            }
            let interval = k.key.rolling_start.0 + i;
            let rpi = cipher.rpi(Enin(interval));
            sightings.push(VenueSighting {
                venue: (mix(j) % 5000) as u32,
                window_start: Enin(interval),
                window_minutes: 10,
                rpi,
                aem: aemk.encrypt(&rpi, Metadata::v1_0(-12).to_bytes()),
                rssi_calibration_db: 0,
                minutes: minutes(j, (j % 7) as u8),
            });
        }
    }
    // Filler: other phones, each heard in all 144 intervals of its day.
    let mut phone = 0u32;
    let mut rpis = Vec::new();
    while sightings.len() < sightings_n {
        let day = FIRST_DAY + phone % days;
        rpis.clear();
        rpis.extend(tek(phone, 9).rpik().cipher().derive(Enin(day * 144), 144));
        for (i, rpi) in rpis.iter().enumerate() {
            if sightings.len() >= sightings_n {
                break;
            }
            let seed = mix((u64::from(phone) << 8) ^ i as u64);
            sightings.push(VenueSighting {
                venue: (seed % 5000) as u32,
                window_start: Enin(day * 144 + i as u32),
                window_minutes: 10,
                rpi: *rpi,
                aem: Aem::from_bytes(((seed >> 32) as u32).to_le_bytes()),
                rssi_calibration_db: 0,
                minutes: minutes(seed, (seed % 7) as u8),
            });
        }
        phone += 1;
    }
    // As the store returns them: a batch is one gateway's window, stored together.
    sightings.sort_by_key(|s| (s.window_start, s.venue));
    (keys, sightings)
}

fn matching(c: &mut Criterion) {
    let keys_n = env("VENUETRACE_BENCH_KEYS", 100_000);
    let sightings_n = env("VENUETRACE_BENCH_SIGHTINGS", 10_000_000);
    let days = env("VENUETRACE_BENCH_DAYS", 2).max(1) as u32;
    let t = Instant::now();
    let (keys, sightings) = scenario(keys_n, sightings_n, days);
    eprintln!(
        "matching: {} keys, {} sightings over {days} days, generated in {:.1} s",
        keys.len(),
        sightings.len(),
        t.elapsed().as_secs_f64()
    );
    let t = Instant::now();
    let index = SightingIndex::build(&sightings, 2);
    let build_s = t.elapsed().as_secs_f64();
    eprintln!(
        "matching: index built in {build_s:.2} s on 2 threads ({} parts, {} MiB with the \
         sightings' compact copy)",
        index.parts(),
        index.memory_bytes() >> 20
    );
    let config = RiskConfig::default();
    // The same keys' days, other TEKs: nothing matches, so this is the join alone (derive and
    // look up), the part of the work that grows with the number of keys.
    let absent: Vec<MatchKey> = keys
        .iter()
        .map(|k| MatchKey {
            id: k.id,
            key: DiagnosisKey {
                tek: tek(k.id as u32, 4),
                ..k.key.clone()
            },
        })
        .collect();

    let mut group = c.benchmark_group("match");
    group.sample_size(10);
    group.sampling_mode(SamplingMode::Flat);
    group.throughput(Throughput::Elements(keys.len() as u64));
    for threads in [2, 1] {
        group.bench_function(format!("threads_{threads}"), |b| {
            b.iter(|| black_box(index.match_keys(black_box(&keys), &config, threads)))
        });
    }
    group.bench_function("join_only_threads_2", |b| {
        b.iter(|| black_box(index.match_keys(black_box(&absent), &config, 2)))
    });
    group.finish();

    // The figures docs/performance.md quotes: best of 8 rounds, each round running every
    // configuration once, so a burst of other work on the machine (which can only slow a run
    // down) spoils one round of each rather than all runs of one.
    let n = keys.len() as f64;
    let configs = [(&keys, 1), (&absent, 1), (&keys, 2), (&absent, 2)];
    let mut best = [f64::MAX; 4];
    let mut stats = None;
    for _ in 0..8 {
        for (i, &(keys, threads)) in configs.iter().enumerate() {
            let t = Instant::now();
            let report = index.match_keys(keys, &config, threads);
            best[i] = best[i].min(t.elapsed().as_secs_f64());
            if i == 0 {
                stats = Some((report.stats, report.events.len(), report.venue_hours.len()));
            }
        }
    }
    let Some((s, events, hours)) = stats else {
        return;
    };
    let probes_per_key = s.probes as f64 / n;
    let hits = s.matched_sightings as f64;
    let (full, join) = ([0.0, best[0], best[2]], [0.0, best[1], best[3]]);
    for threads in [1, 2] {
        let (t_full, t_join) = (full[threads], join[threads]);
        eprintln!(
            "matching: {threads} thread(s): {:.0} ms ({:.0} k keys/s; {} matched sightings, \
             {events} events, {hours} venue-hours); join alone {:.0} ms ({:.0} k keys/s, \
             {:.1} M derived-RPI lookups/s)",
            t_full * 1e3,
            n / t_full / 1e3,
            s.matched_sightings,
            t_join * 1e3,
            n / t_join / 1e3,
            s.probes as f64 / t_join / 1e6,
        );
    }
    // Extrapolation, 2 threads. The join grows with keys × lookups per key (a key of a middle
    // day looks up 144 intervals in its day's part and 12 in each neighbour's: 168); the rest
    // (decrypt, windows, venue hours) with the matched sightings, which depend on how many
    // keys' phones visited gateway venues: shown at this bench's rate (1 % of derived RPIs,
    // a heavy day) and as a per-hit cost.
    let join_target = TARGET_KEYS * join[2] / n * 168.0 / probes_per_key;
    let per_hit = (full[2] - join[2]).max(0.0) / hits.max(1.0);
    let hits_target = hits / n * TARGET_KEYS;
    let total = join_target + per_hit * hits_target;
    eprintln!(
        "matching: extrapolation to {TARGET_KEYS:.0} keys against {TARGET_SIGHTINGS:.0} \
         sightings on 2 threads (day parts of ~{:.1} M sightings): join {join_target:.1} s + \
         {:.2} µs per matched sighting × {hits_target:.0} = {total:.1} s; target \
         {TARGET_SECONDS} s: {}. Index build at the measured rate: {:.0} s for 1e8 sightings \
         (once per day part as its batches arrive, not per match run). Measured at full scale: \
         cargo run --release --example match_scale",
        sightings.len() as f64 / f64::from(days) / 1e6,
        per_hit * 1e6,
        if total <= TARGET_SECONDS {
            "met"
        } else {
            "NOT met"
        },
        TARGET_SIGHTINGS / sightings.len() as f64 * build_s
    );
}

criterion_group!(benches, matching);
criterion_main!(benches);
