//! `bluetrace_presence`: the authority's BlueTrace work once the TempID sightings are read
//! (issue 9): deciding and indexing sightings, a case's contacts with and without its
//! uploaded encounter list, deciding that list, and the venue-hours of registered cases.
//!
//! The day (built once, deterministic): `PHONES` BlueTrace phones at `VENUES` venues, each
//! making 1–3 visits of 5–90 minutes between 08:00 and 20:00, read every 2 minutes; a phone's
//! TempID changes every 15 minutes (one sighting per 10-minute window and TempID, as gateways
//! seal them). The case's encounter list: a record a minute of every overlap of its visits
//! with another phone's, plus `RANDOM_ENCOUNTERS` records of random phones at random times
//! (people met away from any gateway).
//!
//! - `decide_and_index`: `Reads::add` for every sighting (AES-256-GCM decryption, validity)
//!   then `finish` — the CPU part of `load_presences`.
//! - `case_contacts/reads_only` (the baseline) vs `case_contacts/with_encounters`: one case's
//!   contacts without and with its (already decided) encounters; the ratio is the cost of
//!   placing.
//! - `decide_encounters`: deciding the case's list (one decryption per record).
//! - `venue_hours/20_cases`: the venue-hour counts of 20 registered cases.
//!
//! Run: `cargo bench --bench bluetrace_presence` (or `scripts/bench bluetrace`). Results:
//! docs/performance.md.

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use rand::{RngExt, SeedableRng};
use rand_chacha::ChaCha8Rng;
use std::collections::BTreeMap;
use std::hint::black_box;
use venuetrace::aggregate::MinuteRssi;
use venuetrace::bluetrace::{EncounterRecord, TempId, TempIdKey, Uid};
use venuetrace::crypto::Enin;
use venuetrace::presence::{
    Case, Encounter, PresenceSettings, Presences, Reads, TempIdObservation, decide_encounters,
};

const PHONES: u32 = 5_000;
const VENUES: u32 = 50;
const RANDOM_ENCOUNTERS: usize = 5_000;
/// A UTC midnight, as an ENIN (multiple of 144).
const DAY: u32 = 2_950_128;
const DAY_S: i64 = DAY as i64 * 600;

fn uid(phone: u32) -> Uid {
    let mut bytes = [0u8; 21];
    bytes[..4].copy_from_slice(&phone.to_le_bytes());
    Uid::from_bytes(bytes)
}

/// `phone`'s TempID in Unix minute `minute` (15 minutes each, from midnight).
fn tempid_at(key: &TempIdKey, phone: u32, minute: i64) -> TempId {
    let block = minute / 15;
    let mut iv = [0u8; 16];
    iv[..8].copy_from_slice(&((u64::from(phone) << 24) ^ block as u64).to_le_bytes());
    key.encrypt(
        &uid(phone),
        (block * 900 - 60) as i32,
        (block * 900 + 900) as i32,
        &iv,
    )
}

/// One stored sighting, owned.
struct Sighting {
    venue: u32,
    window: u32,
    tempid: TempId,
    minutes: Vec<MinuteRssi>,
}

struct Day {
    key: TempIdKey,
    sightings: Vec<Sighting>,
    /// (phone, venue, first minute, end minute), Unix minutes.
    visits: Vec<(u32, u32, i64, i64)>,
}

fn day() -> Day {
    let key = TempIdKey::new(&[0x42; 32]);
    let mut rng = ChaCha8Rng::seed_from_u64(9);
    let mut windows: BTreeMap<(u32, u32, TempId), Vec<MinuteRssi>> = BTreeMap::new();
    let mut visits = Vec::new();
    for phone in 0..PHONES {
        for _ in 0..rng.random_range(1..=3) {
            let venue = rng.random_range(0..VENUES);
            let start = DAY_S / 60 + rng.random_range(8 * 60..20 * 60);
            let end = start + rng.random_range(5..=90);
            visits.push((phone, venue, start, end));
            for minute in (start..end).step_by(2) {
                let rssi = -60 - rng.random_range(0..30) as i8;
                windows
                    .entry((venue, (minute / 10) as u32, tempid_at(&key, phone, minute)))
                    .or_default()
                    .push(MinuteRssi {
                        minute: (minute % 10) as u8,
                        count: 1,
                        min: rssi,
                        mean: rssi,
                        max: rssi,
                    });
            }
        }
    }
    let sightings = windows
        .into_iter()
        .map(|((venue, window, tempid), minutes)| Sighting {
            venue,
            window,
            tempid,
            minutes,
        })
        .collect();
    Day {
        key,
        sightings,
        visits,
    }
}

fn presences(day: &Day, settings: &PresenceSettings) -> Presences {
    let mut reads = Reads::new();
    for s in &day.sightings {
        reads.add(
            &TempIdObservation {
                venue: s.venue,
                window_start: Enin(s.window),
                rssi_calibration_db: 0,
                tempid: &s.tempid,
                org: "MAR",
                minutes: &s.minutes,
            },
            std::slice::from_ref(&day.key),
            settings,
        );
    }
    reads.finish()
}

/// The encounter list of phone 0 (see the module documentation).
fn encounter_list(day: &Day) -> Vec<EncounterRecord> {
    let mut rng = ChaCha8Rng::seed_from_u64(10);
    let mut records = Vec::new();
    for own in day.visits.iter().filter(|v| v.0 == 0) {
        for other in day.visits.iter().filter(|o| o.1 == own.1 && o.0 != 0) {
            for minute in own.2.max(other.2)..own.3.min(other.3) {
                records.push((other.0, minute * 60 + 30));
            }
        }
    }
    for _ in 0..RANDOM_ENCOUNTERS {
        records.push((
            rng.random_range(1..PHONES),
            DAY_S + rng.random_range(8 * 3600..20 * 3600),
        ));
    }
    records
        .into_iter()
        .map(|(phone, at_s)| EncounterRecord {
            at_s,
            tempid: tempid_at(&day.key, phone, at_s / 60),
            org: "MAR".into(),
        })
        .collect()
}

fn bench(c: &mut Criterion) {
    let settings = PresenceSettings::default();
    let day = day();
    let whole_day = |phone: u32| Case {
        uid: uid(phone),
        from_s: DAY_S,
        to_s: DAY_S + 86_400,
    };

    let mut group = c.benchmark_group("bluetrace_presence");
    group.sample_size(20);
    group.throughput(Throughput::Elements(day.sightings.len() as u64));
    group.bench_function("decide_and_index", |b| {
        b.iter(|| black_box(presences(&day, &settings)))
    });

    let p = presences(&day, &settings);
    let case = whole_day(0);
    let list = encounter_list(&day);
    let keys = [day.key.clone()];
    group.throughput(Throughput::Elements(list.len() as u64));
    group.bench_function("decide_encounters", |b| {
        b.iter(|| black_box(decide_encounters(&list, &case, &keys, &settings)))
    });
    let (met, _): (Vec<Encounter>, _) = decide_encounters(&list, &case, &keys, &settings);
    group.throughput(Throughput::Elements(1));
    group.bench_function("case_contacts/reads_only", |b| {
        b.iter(|| black_box(p.case_contacts(&case, &[], &settings)))
    });
    group.bench_function("case_contacts/with_encounters", |b| {
        b.iter(|| black_box(p.case_contacts(&case, &met, &settings)))
    });
    let cases: Vec<Case> = (0..20).map(|n| whole_day(n * 7)).collect();
    group.bench_function("venue_hours/20_cases", |b| {
        b.iter(|| black_box(p.venue_hours(&cases, &settings)))
    });
    group.finish();
    eprintln!(
        "bluetrace_presence: {} sightings of {PHONES} phones at {VENUES} venues; the case's \
         list: {} records ({} used), contacts {} → {} with it",
        day.sightings.len(),
        list.len(),
        met.len(),
        p.case_contacts(&case, &[], &settings).0.len(),
        p.case_contacts(&case, &met, &settings).0.len(),
    );
}

criterion_group!(benches, bench);
criterion_main!(benches);
