//! The authority's matching driver over a real store (SQLite or PostgreSQL, as
//! `VENUETRACE_TEST_STORE` selects: tests/common/store.rs): incremental runs (new keys, then
//! new batches, revised keys), with or without the daemon's cache kept across runs, end with
//! exactly the results of a full recompute; the daemon's BlueTrace venue-hours follow new
//! batches that matter to a case.

mod common;

use common::store::TestStore;
use venuetrace::advert::{Advert, DeviceAddress, ServiceUuid};
use venuetrace::aggregate::{
    Aggregator, AggregatorConfig, Counters, MinuteRssi, Sighting, TempIdSighting,
};
use venuetrace::authority::bluetrace::{HoursWatch, recompute_hours, recompute_hours_between};
use venuetrace::authority::config::{self, BluetraceSettings};
use venuetrace::authority::service::{MatchCache, match_store, match_store_cached};
use venuetrace::authority::store::{BluetraceCase, ExposureFilter, Store, VenueHourView};
use venuetrace::batch::{Batch, BatchId, GatewayId};
use venuetrace::bluetrace::{EncounterRecord, TempIdKey, Uid};
use venuetrace::crypto::{Enin, Metadata, RollingPeriod, Tek};
use venuetrace::export::{DiagnosisKey, ReportType};
use venuetrace::matching::RiskConfig;

const DAY_ENIN: u32 = 2_950_128; // a UTC midnight (multiple of 144)

/// Batches of one gateway for windows `enins`: phones 0..5 present, phone 0 is the case.
fn store_windows(store: &mut dyn Store, enins: std::ops::Range<u32>, first_sequence: u64) {
    let gateway = store.gateway("gw-m").expect("read").expect("enrolled");
    let mut agg = Aggregator::new(AggregatorConfig::default());
    let mut sequence = first_sequence;
    let gaen = ServiceUuid::from_u16(0xFD6F);
    let mut commit = |window, sequence: &mut u64| {
        let batch = Batch::from_window(
            GatewayId::new("gw-m").expect("id"),
            *sequence,
            "souk-1",
            0,
            window,
        );
        store.store_batch(&batch, &gateway, 0).expect("store");
        *sequence += 1;
    };
    for enin in enins {
        for step in 0..20u64 {
            for phone in 0..5u8 {
                let tek = Tek::from_bytes([phone; 16]);
                let rpi = tek.rpik().cipher().rpi(Enin(enin));
                let aem = tek.aemk().encrypt(&rpi, Metadata::v1_0(-10).to_bytes());
                let mut data = rpi.as_bytes().to_vec();
                data.extend_from_slice(aem.as_bytes());
                let advert = Advert {
                    time_ms: u64::from(enin) * 600_000 + step * 30_000,
                    address: DeviceAddress([phone; 6]),
                    rssi: -55 - phone as i8,
                    service_data: vec![(gaen, data)],
                    ..Advert::default()
                };
                if let Some(window) = agg.observe(&advert) {
                    commit(window, &mut sequence);
                }
            }
        }
    }
    if let Some(window) = agg.close_early() {
        commit(window, &mut sequence);
    }
}

fn case_key(report_type: ReportType) -> DiagnosisKey {
    DiagnosisKey {
        tek: Tek::from_bytes([0; 16]),
        transmission_risk_level: None,
        rolling_start: Enin(DAY_ENIN),
        rolling_period: RollingPeriod::DAY,
        report_type: Some(report_type),
        days_since_onset_of_symptoms: Some(0),
    }
}

fn results(store: &dyn Store) -> Vec<VenueHourView> {
    store
        .venue_hours(&ExposureFilter::default())
        .expect("query")
}

/// Keys first, then batches arriving over two days, then a revised key: after each
/// incremental run the stored results equal a full recompute of the same store.
#[test]
fn incremental_matching_equals_full_recompute() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (_db, mut store) = souk_store(dir.path());
    let risk = RiskConfig::default();
    let check = |store: &mut dyn Store| {
        let incremental = results(store);
        match_store(store, &risk, true).expect("full");
        assert_eq!(results(store), incremental, "incremental differs from full");
    };

    // The morning's batches, then the key: the key's days are matched.
    store_windows(&mut *store, DAY_ENIN + 50..DAY_ENIN + 56, 1);
    store
        .import_keys(&[case_key(ReportType::ConfirmedTest)], "test", 1)
        .expect("import");
    let summary = match_store(&mut *store, &risk, false).expect("match");
    assert!(summary.days >= 1 && summary.events > 0, "{summary:?}");
    let morning = results(&*store);
    assert!(!morning.is_empty());
    check(&mut *store);

    // Afternoon batches, and some just after midnight (inside the ±2 h tolerance): only those
    // days are rematched, and the new hours appear.
    store_windows(&mut *store, DAY_ENIN + 100..DAY_ENIN + 104, 100);
    store_windows(&mut *store, DAY_ENIN + 144..DAY_ENIN + 146, 200);
    let summary = match_store(&mut *store, &risk, false).expect("match");
    assert!(summary.days >= 1);
    let later = results(&*store);
    assert!(later.len() > morning.len(), "afternoon hours added");
    check(&mut *store);

    // A revised key (withdrawn diagnosis) removes its exposures on the next run.
    store
        .import_keys(&[case_key(ReportType::Revoked)], "test", 2)
        .expect("revise");
    match_store(&mut *store, &risk, false).expect("match");
    assert!(
        results(&*store).is_empty(),
        "a revoked key's exposures are gone"
    );
    check(&mut *store);

    // Nothing new: nothing to do.
    assert_eq!(
        match_store(&mut *store, &risk, false).expect("match").days,
        0
    );
}

/// Results of a full recompute with a fresh cache of `budget` bytes (restores nothing: the
/// store's results are replaced).
fn full_results(store: &mut dyn Store, budget: usize) -> Vec<VenueHourView> {
    let mut cache = MatchCache::new(budget);
    match_store_cached(
        store,
        &RiskConfig::default(),
        true,
        &mut cache,
        &mut |_, _, _| {},
    )
    .expect("full");
    results(store)
}

/// The daemon's path: one [`MatchCache`] kept across runs while batches arrive for a day it
/// holds (read alone and added as a new part, not the day again), a key arrives for the next
/// day and an old day is purged. After every run the stored results equal a full recompute
/// with a fresh cache, and with a cache too small for more than one day (a pass per day,
/// evicting in between).
#[test]
fn cached_matching_across_ingests_equals_full_recompute() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (_db, mut store) = souk_store(dir.path());
    let risk = RiskConfig::default();
    let mut cache = MatchCache::new(1 << 30);
    let day = DAY_ENIN / 144;
    let run = |store: &mut dyn Store, cache: &mut MatchCache| {
        let summary = match_store_cached(store, &risk, false, cache, &mut |_, _, _| {})
            .expect("cached match");
        let incremental = results(store);
        assert_eq!(
            full_results(store, 1 << 30),
            incremental,
            "cached differs from full"
        );
        assert_eq!(
            full_results(store, 1),
            incremental,
            "one day per pass differs"
        );
        (summary, incremental)
    };

    // An old day with its own case (purged later), then a morning of 50 windows and the key.
    let old = DAY_ENIN - 5 * 144;
    store_windows(&mut *store, old + 60..old + 70, 1);
    let mut old_key = case_key(ReportType::ConfirmedTest);
    old_key.tek = Tek::from_bytes([2; 16]);
    old_key.rolling_start = Enin(old);
    store_windows(&mut *store, DAY_ENIN + 40..DAY_ENIN + 90, 100);
    store
        .import_keys(&[old_key, case_key(ReportType::ConfirmedTest)], "test", 1)
        .expect("import");
    let (summary, first) = run(&mut *store, &mut cache);
    assert!(summary.events > 0 && !first.is_empty(), "{summary:?}");
    assert_eq!(summary.sightings, 60 * 5, "both days read whole");
    assert_eq!(cache.parts(day), Some(1));

    // Two more windows of the cached day: only their 10 sightings are read, as a new part.
    store_windows(&mut *store, DAY_ENIN + 90..DAY_ENIN + 92, 200);
    let (summary, second) = run(&mut *store, &mut cache);
    assert_eq!(summary.sightings, 10, "only the new sightings are read");
    assert_eq!(
        cache.parts(day),
        Some(2),
        "appended, not merged (10 < 250 / 2)"
    );
    assert!(second.len() > first.len(), "the new windows' hour is found");

    // One more (5 sightings): merged with the previous small part, still two parts.
    store_windows(&mut *store, DAY_ENIN + 92..DAY_ENIN + 93, 300);
    let (summary, _) = run(&mut *store, &mut cache);
    assert_eq!(summary.sightings, 5);
    assert_eq!(cache.parts(day), Some(2));

    // A key of the next day (phone 1) and that day's batches.
    let mut next_key = case_key(ReportType::SelfReport);
    next_key.tek = Tek::from_bytes([1; 16]);
    next_key.rolling_start = Enin(DAY_ENIN + 144);
    store.import_keys(&[next_key], "test", 2).expect("import");
    store_windows(&mut *store, DAY_ENIN + 150..DAY_ENIN + 160, 400);
    let (summary, third) = run(&mut *store, &mut cache);
    assert!(summary.days >= 2, "{summary:?}");
    assert!(third.len() > second.len());

    // The old day is purged (sightings and its key) as the daemon does it: the cache forgets
    // it, and a later batch is matched as before.
    let cutoff_s = i64::from(old / 144 + 2) * 86_400;
    store.purge(cutoff_s, cutoff_s).expect("purge");
    cache.forget_before(Enin((cutoff_s / 600) as u32));
    assert_eq!(cache.parts(old / 144), None);
    store_windows(&mut *store, DAY_ENIN + 93..DAY_ENIN + 95, 500);
    let (summary, _) = run(&mut *store, &mut cache);
    assert_eq!(summary.sightings, 10);
    assert!(cache.days() >= 2);
}

/// Stores one batch of gateway `gw-m` for the window starting at `window`: `tek`'s RPI of
/// interval `rpi_interval` heard in `minutes` (offsets) at −60 dBm.
fn store_heard(
    store: &mut dyn Store,
    tek: Tek,
    rpi_interval: u32,
    window: u32,
    minutes: std::ops::Range<u8>,
    sequence: u64,
) {
    let gateway = store.gateway("gw-m").expect("read").expect("enrolled");
    let rpi = tek.rpik().cipher().rpi(Enin(rpi_interval));
    let aem = tek.aemk().encrypt(&rpi, Metadata::v1_0(-10).to_bytes());
    let minutes: Vec<MinuteRssi> = minutes
        .map(|minute| MinuteRssi {
            minute,
            count: 4,
            min: -62,
            mean: -60,
            max: -58,
        })
        .collect();
    let batch = Batch {
        id: BatchId {
            gateway: GatewayId::new("gw-m").expect("id"),
            sequence,
        },
        venue: "souk-1".into(),
        window_start: Enin(window),
        window_minutes: 10,
        closed_early: false,
        rssi_calibration_db: 0,
        counters: Counters::default(),
        sightings: vec![Sighting {
            rpi,
            aem,
            first_minute: minutes.first().map_or(0, |m| m.minute),
            last_minute: minutes.last().map_or(0, |m| m.minute),
            reports: 4 * minutes.len() as u32,
            minutes,
        }],
        tempids: Vec::new(),
    };
    store.store_batch(&batch, &gateway, 0).expect("store");
}

/// A batch can change the results of a later day than its own: a case heard every minute
/// from 19:00 to 00:04 (its last RPI until a few minutes after midnight) has exposure windows
/// starting every 30 minutes, the last at 00:00 on the next day; when the gateway's batch of
/// 18:50 arrives late (heard from 18:55), every window starts 5 minutes earlier and the last
/// one at 23:55. The next day is rematched, as a full recompute would.
#[test]
fn a_late_batch_can_move_the_next_days_windows() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (_db, mut store) = souk_store(dir.path());
    let risk = RiskConfig::default();
    let tek = Tek::from_bytes([7; 16]);
    let mut key = case_key(ReportType::ConfirmedTest);
    key.tek = tek;
    store.import_keys(&[key], "test", 1).expect("import");
    let (seven_pm, last) = (DAY_ENIN + 114, DAY_ENIN + 143);
    for window in seven_pm..=last {
        store_heard(&mut *store, tek, window, window, 0..10, u64::from(window));
    }
    store_heard(&mut *store, tek, last, last + 1, 0..5, u64::from(last + 1));
    let mut cache = MatchCache::new(1 << 30);
    let mut run = |store: &mut dyn Store| {
        match_store_cached(store, &risk, false, &mut cache, &mut |_, _, _| {}).expect("match");
        let stored = results(store);
        assert_eq!(
            full_results(store, 1 << 30),
            stored,
            "incremental differs from full"
        );
        stored
    };
    let midnight_s = i64::from(last + 1) * 600;
    let next_day = |hours: &[VenueHourView]| -> Vec<(i64, u32, u32)> {
        hours
            .iter()
            .filter(|h| h.hour_start_s >= midnight_s)
            .map(|h| (h.hour_start_s, h.exposure_events, h.exposure_minutes))
            .collect()
    };
    let before = run(&mut *store);
    assert_eq!(
        next_day(&before),
        [(midnight_s, 1, 5)],
        "a window from 00:00"
    );

    store_heard(&mut *store, tek, seven_pm - 1, seven_pm - 1, 5..10, 1);
    let after = run(&mut *store);
    assert_eq!(
        next_day(&after),
        [(midnight_s, 0, 5)],
        "the window from 23:55"
    );
}

/// Stores one batch of gateway `gw-m` for the window starting at `window` holding, for each
/// `(uid, minutes)`, a TempID of that UID (valid all day) read in those minute offsets.
fn store_tempids(
    store: &mut dyn Store,
    key: &TempIdKey,
    window: u32,
    reads: &[(u8, std::ops::Range<u8>)],
    sequence: u64,
) {
    let gateway = store.gateway("gw-m").expect("read").expect("enrolled");
    let day_s = i64::from(DAY_ENIN) * 600;
    let mut tempids: Vec<TempIdSighting> = reads
        .iter()
        .map(|(uid, minutes)| {
            let minutes: Vec<MinuteRssi> = minutes
                .clone()
                .map(|minute| MinuteRssi {
                    minute,
                    count: 1,
                    min: -70,
                    mean: -70,
                    max: -70,
                })
                .collect();
            TempIdSighting {
                tempid: key.encrypt(
                    &Uid::from_bytes([*uid; 21]),
                    day_s as i32,
                    day_s as i32 + 86_400,
                    &[*uid; 16],
                ),
                org: "MAR".into(),
                first_minute: minutes[0].minute,
                last_minute: minutes[minutes.len() - 1].minute,
                reads: minutes.len() as u32,
                minutes,
            }
        })
        .collect();
    tempids.sort_by_key(|t| t.tempid);
    let batch = Batch {
        id: BatchId {
            gateway: GatewayId::new("gw-m").expect("id"),
            sequence,
        },
        venue: "souk-1".into(),
        window_start: Enin(window),
        window_minutes: 10,
        closed_early: false,
        rssi_calibration_db: 0,
        counters: Counters {
            bluetrace_reads: tempids.iter().map(|t| u64::from(t.reads)).sum(),
            ..Counters::default()
        },
        sightings: Vec::new(),
        tempids,
    };
    store.store_batch(&batch, &gateway, 0).expect("store");
}

/// The stored venue-hours' BlueTrace counts: (hour, cases, contacts).
fn bt_hours(store: &dyn Store) -> Vec<(i64, u32, u32)> {
    store
        .venue_hours(&ExposureFilter::default())
        .expect("query")
        .iter()
        .map(|h| (h.hour_start_s, h.bt_cases, h.bt_contacts))
        .collect()
}

/// A new store of the selected kind in `dir` with `gw-m` enrolled at the market `souk-1`; the
/// `TestStore` is returned first, so a `let (_db, store)` drops the store before it.
fn souk_store(dir: &std::path::Path) -> (TestStore, venuetrace::authority::store::DynStore) {
    let db = TestStore::new(dir);
    let mut store = db.open();
    store
        .add_gateway("gw-m", "souk-1", "market", [9; 32], None, 0, 0)
        .expect("enroll");
    (db, store)
}

/// Registers `uid` as a case infectious all of `DAY_ENIN`'s day.
fn all_day_case(store: &mut dyn Store, uid: Uid) {
    let day_s = i64::from(DAY_ENIN) * 600;
    store
        .upsert_case(&BluetraceCase {
            uid,
            from_s: day_s,
            to_s: day_s + 86_400,
            label: None,
            added_ms: 0,
        })
        .expect("case");
}

/// A case's encounter with `uid` at `at_s`: `uid`'s TempID (valid all day, as
/// [`store_tempids`] encrypts it).
fn met(key: &TempIdKey, uid: u8, at_s: i64) -> EncounterRecord {
    let day_s = i64::from(DAY_ENIN) * 600;
    EncounterRecord {
        at_s,
        tempid: key.encrypt(
            &Uid::from_bytes([uid; 21]),
            day_s as i32,
            day_s as i32 + 86_400,
            &[uid; 16],
        ),
        org: "MAR".into(),
    }
}

/// `[bluetrace]` settings with the TempID key `[3; 32]` in a key file in `dir`, and that key.
fn bluetrace_settings(dir: &std::path::Path) -> (BluetraceSettings, TempIdKey) {
    use base64::Engine;
    std::fs::write(
        dir.join("tempid.key"),
        base64::engine::general_purpose::STANDARD.encode([3u8; 32]),
    )
    .expect("key file");
    std::fs::write(
        dir.join("authority.toml"),
        "[bluetrace]\nkey_files = [\"tempid.key\"]\n",
    )
    .expect("config");
    let settings = config::load(&dir.join("authority.toml"), &[])
        .expect("configuration")
        .bluetrace;
    (settings, TempIdKey::new(&[3; 32]))
}

/// Recomputing only a span's BlueTrace venue-hours gives exactly what recomputing everything
/// gives for those hours; so the daemon's watch, recomputing only the span each new batch can
/// change, ends with the full recompute's table. Random reads of 60 UIDs over a day (visits
/// of 10 minutes to 2 hours, reads with gaps around the 15-minute presence gap), 4 frequent
/// visitors as cases (two all day, two from a random moment for 3-10 hours) and a fifth never
/// read, placed by its encounter list, batches stored in random order, 300 random spans; six
/// seeds.
#[test]
fn span_recompute_equals_full_recompute() {
    for seed in 1..=6 {
        span_scenario(seed);
    }
}

fn span_scenario(seed: u64) {
    use rand::{RngExt, SeedableRng, seq::SliceRandom};
    let dir = tempfile::tempdir().expect("tempdir");
    let (_db, mut store) = souk_store(dir.path());
    let (settings, key) = bluetrace_settings(dir.path());
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
    let day_s = i64::from(DAY_ENIN) * 600;
    // Per window (of 144), the reads: (uid, minutes).
    let mut windows: Vec<Vec<(u8, std::ops::Range<u8>)>> = vec![Vec::new(); 144];
    for uid in 1..=60u8 {
        // The cases (1-4) come often, so that there is much to count.
        let visits = if uid <= 4 { 8 } else { rng.random_range(1..5) };
        for _ in 0..visits {
            let start = rng.random_range(0..140usize);
            let end = (start + rng.random_range(1..12)).min(144);
            for window in &mut windows[start..end] {
                if rng.random_bool(0.8) {
                    let from = rng.random_range(0..8u8);
                    window.push((uid, from..rng.random_range(from + 1..=10)));
                }
            }
        }
    }
    // Two cases infectious all day, two from a random time (not on an hour) for 3-10 hours.
    for uid in 1..=4u8 {
        let (from_s, to_s) = if uid <= 2 {
            (day_s, day_s + 86_400)
        } else {
            let from_s = day_s + rng.random_range(0..14 * 3600);
            (from_s, from_s + rng.random_range(3 * 3600..10 * 3600))
        };
        store
            .upsert_case(&BluetraceCase {
                uid: Uid::from_bytes([uid; 21]),
                from_s,
                to_s,
                label: None,
                added_ms: 0,
            })
            .expect("case");
    }
    // A fifth case no gateway reads (uid 61), placed only by its encounter list: 400 records
    // of random UIDs at random seconds of the day.
    let companion = Uid::from_bytes([61; 21]);
    all_day_case(&mut *store, companion);
    let records: Vec<EncounterRecord> = (0..400)
        .map(|_| {
            let uid = rng.random_range(1..=60u8);
            met(&key, uid, day_s + rng.random_range(0..86_400))
        })
        .collect();
    store
        .set_case_encounters(&companion, &records)
        .expect("encounters");
    let mut order: Vec<usize> = (0..144).filter(|w| !windows[*w].is_empty()).collect();
    order.shuffle(&mut rng);
    let mut watch = HoursWatch::new();
    watch.after_batches(&mut *store, &settings).expect("first");
    let mut span_recomputes = 0;
    for (sequence, w) in order.iter().enumerate() {
        let mut reads = windows[*w].clone();
        reads.sort_by_key(|(uid, _)| *uid);
        reads.dedup_by_key(|(uid, _)| *uid);
        store_tempids(
            &mut *store,
            &key,
            DAY_ENIN + *w as u32,
            &reads,
            sequence as u64 + 1,
        );
        span_recomputes += usize::from(
            watch
                .after_batches(&mut *store, &settings)
                .expect("watch")
                .is_some(),
        );
    }
    let watched = bt_hours(&*store);
    let full = recompute_hours(&mut *store, &settings).expect("full");
    assert!(full.venue_hours >= 15, "{full:?}");
    assert!(full.encounters.placed >= 20, "{full:?}");
    assert!(span_recomputes >= 10, "{span_recomputes} span recomputes");
    assert_eq!(
        watched,
        bt_hours(&*store),
        "seed {seed}: watch (span recomputes) vs full"
    );
    let all = bt_hours(&*store);
    for _ in 0..300 {
        let from = day_s + rng.random_range(0..24 * 3600);
        let to = from + rng.random_range(1..3 * 3600);
        store
            .replace_bluetrace_hours_between(from.div_euclid(3600) * 3600, to, &[])
            .expect("clear");
        recompute_hours_between(&mut *store, &settings, from, to).expect("span");
        assert_eq!(bt_hours(&*store), all, "seed {seed}: span {from}..{to}");
    }
}

/// A case placed by its encounter list can be changed by a read farther away than a read
/// case's: a late batch (10:20) extends uid 5's presence from 10:03–10:08 to 10:03–10:23,
/// which now holds the case's encounter with uid 5 at 10:10; with its encounter with uid 6 at
/// 09:55 the case's presence bridges to 09:53–10:13, meeting uid 7 (read at 10:00) in the
/// 09:00 hour too — 25 minutes before the batch's window, farther than `gap + margin` (17).
/// The daemon's span recompute (padded twice that) counts the 09:00 hour as a full recompute
/// does.
#[test]
fn daemon_recompute_reaches_hours_an_encounter_bridges() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (_db, mut store) = souk_store(dir.path());
    let (settings, key) = bluetrace_settings(dir.path());
    let day_s = i64::from(DAY_ENIN) * 600;
    let at = |hour: i64, minute: i64| day_s + hour * 3600 + minute * 60;
    let ten = DAY_ENIN + 60;
    store_tempids(&mut *store, &key, ten - 1, &[(6, 5..6)], 1); // uid 6 at 09:55
    store_tempids(&mut *store, &key, ten, &[(5, 5..6), (7, 0..1)], 2); // 10:05, 10:00
    let companion = Uid::from_bytes([61; 21]);
    all_day_case(&mut *store, companion);
    store
        .set_case_encounters(
            &companion,
            &[met(&key, 6, at(9, 55) + 30), met(&key, 5, at(10, 10))],
        )
        .expect("encounters");
    let mut watch = HoursWatch::new();
    watch.after_batches(&mut *store, &settings).expect("first");
    // Before: the case only at 09:53-09:58, with uid 6.
    assert_eq!(bt_hours(&*store), [(at(9, 0), 1, 1)]);

    store_tempids(&mut *store, &key, ten + 2, &[(5, 0..1)], 3); // uid 5 at 10:20
    let span = watch
        .after_batches(&mut *store, &settings)
        .expect("watch")
        .expect("recomputed");
    assert_eq!(span.encounters.placed, 2);
    let watched = bt_hours(&*store);
    assert_eq!(watched, [(at(9, 0), 1, 2), (at(10, 0), 1, 2)]);
    recompute_hours(&mut *store, &settings).expect("full");
    assert_eq!(bt_hours(&*store), watched);
}

/// The daemon's BlueTrace step ([`HoursWatch`], called after each rematch): the first call
/// computes the venue-hours of the cases registered; later ones recompute only when new
/// batches hold TempID sightings within a case's span — a contact arriving late is counted, a
/// batch far from any case changes nothing and costs no recompute.
#[test]
fn daemon_recomputes_bluetrace_hours_after_batches_that_matter() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (_db, mut store) = souk_store(dir.path());
    let (settings, key) = bluetrace_settings(dir.path());
    let day_s = i64::from(DAY_ENIN) * 600;
    // 10:02-10:09: the case (uid 1), with uid 2 (widened by 2 minutes: from 10:00).
    let ten = DAY_ENIN + 60;
    store_tempids(&mut *store, &key, ten, &[(1, 2..10), (2, 2..6)], 1);
    store
        .upsert_case(&BluetraceCase {
            uid: Uid::from_bytes([1; 21]),
            from_s: day_s,
            to_s: day_s + 12 * 3600,
            label: None,
            added_ms: 0,
        })
        .expect("case");
    let mut watch = HoursWatch::new();
    let first = watch
        .after_batches(&mut *store, &settings)
        .expect("recompute")
        .expect("the first call computes");
    assert_eq!(
        (first.cases, first.venue_hours, first.outcomes.used),
        (1, 1, 2)
    );
    assert_eq!(bt_hours(&*store), [(day_s + 36_000, 1, 1)]);
    assert_eq!(
        watch
            .after_batches(&mut *store, &settings)
            .expect("nothing new"),
        None
    );

    // A late batch of 10:10 with uid 3 (overlapping the case's margin): recomputed.
    store_tempids(&mut *store, &key, ten + 1, &[(3, 0..2)], 2);
    assert!(
        watch
            .after_batches(&mut *store, &settings)
            .expect("recompute")
            .is_some()
    );
    assert_eq!(bt_hours(&*store), [(day_s + 36_000, 1, 2)]);

    // A batch of the next evening, far from the case's period: no recompute.
    store_tempids(&mut *store, &key, DAY_ENIN + 144 + 120, &[(4, 0..5)], 3);
    assert_eq!(
        watch
            .after_batches(&mut *store, &settings)
            .expect("checked"),
        None
    );
    assert_eq!(bt_hours(&*store), [(day_s + 36_000, 1, 2)]);
}
