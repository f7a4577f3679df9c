//! Specifications of exposure matching (`venuetrace::matching`): hand-computed windows and
//! scores, the ±2 h tolerance edges, replay cuts, revoked keys and bad metadata, the weights,
//! determinism, co-presence counts, and a simulated city day checked against its ground truth.

use std::collections::{BTreeMap, BTreeSet};
use venuetrace::aggregate::{Aggregator, AggregatorConfig, MinuteRssi};
use venuetrace::crypto::{Enin, Metadata, RollingPeriod, Tek};
use venuetrace::export::{DiagnosisKey, ReportType};
use venuetrace::matching::{
    Infectiousness, MatchKey, MatchReport, RiskConfig, SightingIndex, VenueSighting, match_keys,
};
use venuetrace::sim::{City, PhoneKind, SimConfig};

/// A UTC day (2025-06-05); its first interval is `DAY * 144`.
const DAY: u32 = 20_244;
/// 10:00 UTC on `DAY`.
const TEN_AM: u32 = DAY * 144 + 60;

fn tek(byte: u8) -> Tek {
    Tek::from_bytes([byte; 16])
}

fn diagnosis_key(tek: Tek, rolling_start: u32, period: i64) -> DiagnosisKey {
    DiagnosisKey {
        tek,
        transmission_risk_level: None,
        rolling_start: Enin(rolling_start),
        rolling_period: RollingPeriod::new(period).expect("valid period"),
        report_type: None,
        days_since_onset_of_symptoms: None,
    }
}

/// A day key of `tek` (period 144 from `DAY`'s first interval).
fn day_key(id: u64, tek: Tek) -> MatchKey {
    MatchKey {
        id,
        key: diagnosis_key(tek, DAY * 144, 144),
    }
}

/// One minute of RSSI statistics.
fn minute(minute: u8, count: u32, mean: i8, max: i8) -> MinuteRssi {
    MinuteRssi {
        minute,
        count,
        min: mean.saturating_sub(5).min(max),
        mean,
        max,
    }
}

/// What a gateway at `venue` sealed about `tek`'s RPI of `interval`, heard in the window
/// starting at `window_start`, with metadata bytes `metadata`.
fn sighting_with_metadata(
    tek: Tek,
    interval: u32,
    venue: u32,
    window_start: u32,
    calibration: i32,
    metadata: [u8; 4],
    minutes: Vec<MinuteRssi>,
) -> VenueSighting {
    let (rpik, aemk) = tek.keys();
    let rpi = rpik.cipher().rpi(Enin(interval));
    VenueSighting {
        venue,
        window_start: Enin(window_start),
        window_minutes: 10,
        rpi,
        aem: aemk.encrypt(&rpi, metadata),
        rssi_calibration_db: calibration,
        minutes,
    }
}

/// [`sighting_with_metadata`] with metadata 1.0 and TX power −10 dBm, heard in the RPI's own
/// interval, calibration 0.
fn sighting(tek: Tek, interval: u32, venue: u32, minutes: Vec<MinuteRssi>) -> VenueSighting {
    sighting_with_metadata(
        tek,
        interval,
        venue,
        interval,
        0,
        Metadata::v1_0(-10).to_bytes(),
        minutes,
    )
}

/// Ten minutes (0..=9) at mean RSSI −60 dBm: typical attenuation 50 dB with TX −10 (immediate).
fn ten_close_minutes() -> Vec<MinuteRssi> {
    (0..10).map(|m| minute(m, 5, -60, -55)).collect()
}

fn unix_s(interval: u32, minute: u32) -> i64 {
    i64::from(interval) * 600 + i64::from(minute) * 60
}

/// One key, sightings at known minutes with known RSSI, calibration and TX power: every
/// attenuation, bucket, credited second, window and score below is computed by hand.
///
/// TX power −10 dBm, gateway calibration +5 dB, so attenuation = −10 − (RSSI + 5) = −15 − RSSI.
///
/// | abs. minute | mean / max RSSI | typical / min att. | bucket | seconds credited |
/// |---|---|---|---|---|
/// | 0  | −60 / −55 | 45 / 40 | immediate | 60 (first scan) |
/// | 1  | −70 / −65 | 55 / 50 | immediate (edge 55) | 60 |
/// | 2  | −78 / −70 | 63 / 55 | near (edge 63) | 60 |
/// | 5  | −90 / −90 | 75 / 75 | other | 180 (gap 3 min) |
/// | 10 | −75 / −70 | 60 / 55 | near | 300 (gap 5 min) |
/// | 19 | −81 / −76 | 66 / 61 | medium | 300 (gap 9 min, capped) |
/// | 31 | −60 / −60 | 45 / 45 | immediate | 60: ≥ 30 min after minute 0, a new window |
///
/// Window 1 score = 60×1.5 + 60×1.5 + 60×1.0 + 180×0 + 300×1.0 + 300×0.5 = 690 (report type
/// and infectiousness weights 1); minutes by bucket [2, 6, 5, 3]; typical attenuation weighted
/// by seconds = (45·60 + 55·60 + 63·60 + 75·180 + 60·300 + 66·300) / 960 = 63.6 → 64.
/// Window 2 score = 60 × 1.5 = 90.
#[test]
fn hand_computed_windows_and_scores() {
    let t = tek(7);
    let cal = 5;
    let metadata = Metadata::v1_0(-10).to_bytes();
    let at = |interval: u32, minutes| {
        sighting_with_metadata(t, interval, 5, interval, cal, metadata, minutes)
    };
    let sightings = vec![
        at(
            TEN_AM,
            vec![
                minute(0, 4, -60, -55),
                minute(1, 3, -70, -65),
                minute(2, 2, -78, -70),
                minute(5, 1, -90, -90),
            ],
        ),
        at(
            TEN_AM + 1,
            vec![minute(0, 2, -75, -70), minute(9, 2, -81, -76)],
        ),
        at(TEN_AM + 3, vec![minute(1, 1, -60, -60)]),
    ];
    let report = match_keys(&[day_key(42, t)], &sightings, &RiskConfig::default());

    assert_eq!(report.events.len(), 2);
    let w1 = &report.events[0];
    assert_eq!((w1.key_id, w1.venue, w1.tx_power_dbm), (42, 5, -10));
    assert_eq!(w1.start_unix_s, unix_s(TEN_AM, 0));
    assert_eq!(w1.end_unix_s, unix_s(TEN_AM, 20));
    let scans: Vec<(i64, u8, u8, u32)> = w1
        .scan_instances
        .iter()
        .map(|s| {
            (
                (s.minute_unix_s - unix_s(TEN_AM, 0)) / 60,
                s.typical_attenuation_db,
                s.min_attenuation_db,
                s.seconds_since_last_scan,
            )
        })
        .collect();
    assert_eq!(
        scans,
        [
            (0, 45, 40, 60),
            (1, 55, 50, 60),
            (2, 63, 55, 60),
            (5, 75, 75, 180),
            (10, 60, 55, 300),
            (19, 66, 61, 300),
        ]
    );
    assert_eq!(w1.minutes_by_bucket, [2, 6, 5, 3]);
    assert_eq!(w1.score, 690.0);
    assert_eq!(w1.min_attenuation_db, 40);
    assert_eq!(w1.typical_attenuation_db, 64);
    assert_eq!(w1.report_type, ReportType::ConfirmedTest);
    assert_eq!(w1.infectiousness, Infectiousness::Standard);

    let w2 = &report.events[1];
    assert_eq!(w2.start_unix_s, unix_s(TEN_AM, 31));
    assert_eq!(w2.end_unix_s, unix_s(TEN_AM, 32));
    assert_eq!(w2.minutes_by_bucket, [1, 0, 0, 0]);
    assert_eq!(w2.score, 90.0);

    assert_eq!(report.venue_hours.len(), 1);
    let hour = &report.venue_hours[0];
    assert_eq!(hour.venue, 5);
    assert_eq!(hour.hour_start_unix_s, unix_s(TEN_AM, 0));
    assert_eq!((hour.exposure_events, hour.infectious_keys), (2, 1));
    assert_eq!(hour.exposure_minutes, 7);
    assert_eq!((hour.max_score, hour.total_score), (690.0, 780.0));
    assert_eq!((hour.co_present_rpis, hour.co_present_visitors), (0, 0));

    let s = report.stats;
    // Only intervals that can have been heard in the stored windows (10:00..10:40) ± 12 are
    // looked up: 28 of the key's 144.
    assert_eq!((s.keys, s.probes, s.matched_sightings), (1, 28, 3));
    assert_eq!((s.windows, s.windows_below_minimum), (2, 0));
    assert_eq!(
        (s.bad_metadata, s.replay_cut, s.out_of_tolerance),
        (0, 0, 0)
    );
}

/// Two RPIs of one key heard in the same minute (a rotation) and two gateways of one venue
/// merge into one scan instance: typical attenuation is the report-weighted mean, minimum the
/// lowest; each gateway's own calibration applies.
#[test]
fn one_minute_heard_twice_is_one_scan_instance() {
    let t = tek(8);
    let metadata = Metadata::v1_0(-10).to_bytes();
    let sightings = vec![
        // Old RPI, still heard at the start of the next window: 3 reports at 50 dB / min 45.
        sighting_with_metadata(
            t,
            TEN_AM - 1,
            1,
            TEN_AM,
            0,
            metadata,
            vec![minute(0, 3, -60, -55)],
        ),
        // New RPI, 1 report at 70 dB / min 60, by a gateway calibrated +10 dB.
        sighting_with_metadata(
            t,
            TEN_AM,
            1,
            TEN_AM,
            10,
            metadata,
            vec![minute(0, 1, -90, -80)],
        ),
    ];
    let report = match_keys(&[day_key(1, t)], &sightings, &RiskConfig::default());
    assert_eq!(report.events.len(), 1);
    let scans = &report.events[0].scan_instances;
    assert_eq!(scans.len(), 1);
    // (3 × 50 + 1 × 70) / 4 = 55.
    assert_eq!(scans[0].typical_attenuation_db, 55);
    assert_eq!(scans[0].min_attenuation_db, 45);
    assert_eq!(report.stats.matched_sightings, 2);
}

/// An RPI counts only in minutes observed within ±12 intervals of its own interval: exactly 12
/// intervals after or before matches, 13 does not, including across a UTC day boundary (the
/// index is split by day) and inside one long window (minute by minute).
#[test]
fn two_hour_tolerance_edges() {
    let t = tek(9);
    // One interval, early on DAY: 12 intervals before it is on the previous day.
    let own = DAY * 144 + 5;
    let key = MatchKey {
        id: 3,
        key: diagnosis_key(t, own, 1),
    };
    let metadata = Metadata::v1_0(-10).to_bytes();
    let heard = |venue: u32, window_start: u32, minutes: Vec<MinuteRssi>| {
        sighting_with_metadata(t, own, venue, window_start, 0, metadata, minutes)
    };
    let mut long = heard(
        6,
        own + 11,
        vec![
            minute(5, 1, -60, -60),  // interval own + 11: in
            minute(15, 1, -60, -60), // own + 12: in
            minute(25, 1, -60, -60), // own + 13: out
        ],
    );
    long.window_minutes = 30;
    let sightings = vec![
        heard(1, own + 12, vec![minute(9, 1, -60, -60)]),
        heard(2, own + 13, vec![minute(0, 1, -60, -60)]),
        heard(3, own - 12, vec![minute(0, 1, -60, -60)]),
        heard(4, own - 13, vec![minute(9, 1, -60, -60)]),
        long,
    ];
    let report = match_keys(&[key], &sightings, &RiskConfig::default());
    let venues: Vec<u32> = report.events.iter().map(|e| e.venue).collect();
    assert_eq!(venues, [1, 3, 6]);
    let long_minutes: Vec<i64> = report.events[2]
        .scan_instances
        .iter()
        .map(|s| (s.minute_unix_s - unix_s(own + 11, 0)) / 60)
        .collect();
    assert_eq!(long_minutes, [5, 15]);
    assert_eq!(report.stats.out_of_tolerance, 2);
    assert_eq!(report.stats.matched_sightings, 3);
}

/// A phone sends one RPI for at most 20 minutes: an RPI heard at a venue for 30 consecutive
/// minutes keeps its first 20 (one cut counted); the same RPI for 5 minutes at another venue is
/// untouched.
#[test]
fn replayed_rpi_is_cut_after_twenty_minutes() {
    let t = tek(10);
    let metadata = Metadata::v1_0(-10).to_bytes();
    let heard = |venue: u32, window_start: u32, minutes: Vec<MinuteRssi>| {
        sighting_with_metadata(t, TEN_AM, venue, window_start, 0, metadata, minutes)
    };
    let sightings = vec![
        heard(1, TEN_AM, ten_close_minutes()),
        heard(1, TEN_AM + 1, ten_close_minutes()),
        heard(1, TEN_AM + 2, ten_close_minutes()),
        heard(2, TEN_AM, ten_close_minutes()[..5].to_vec()),
    ];
    let report = match_keys(&[day_key(1, t)], &sightings, &RiskConfig::default());
    assert_eq!(report.events.len(), 2);
    let at_1 = &report.events[0];
    assert_eq!(at_1.venue, 1);
    assert_eq!(at_1.scan_instances.len(), 20);
    assert_eq!(at_1.end_unix_s, unix_s(TEN_AM, 20));
    assert_eq!(at_1.score, 20.0 * 60.0 * 1.5);
    assert_eq!(report.events[1].scan_instances.len(), 5);
    assert_eq!(report.stats.replay_cut, 1);
}

/// Revoked keys are skipped (counted, not even derived); a hit whose AEM does not decrypt to
/// metadata 1.x is dropped and counted; metadata 1.1 is accepted.
#[test]
fn revoked_keys_and_bad_metadata() {
    let revoked_tek = tek(11);
    let mut revoked = day_key(1, revoked_tek);
    revoked.key.report_type = Some(ReportType::Revoked);
    let bad_tek = tek(12);
    let v11_tek = tek(13);
    let sightings = vec![
        sighting(revoked_tek, TEN_AM, 1, ten_close_minutes()),
        sighting_with_metadata(
            bad_tek,
            TEN_AM,
            2,
            TEN_AM,
            0,
            [0x80, 0xF6, 0, 0], // version 2.0
            ten_close_minutes(),
        ),
        sighting_with_metadata(
            v11_tek,
            TEN_AM,
            3,
            TEN_AM,
            0,
            [0x50, 0xF6, 0, 0], // version 1.1, TX −10
            ten_close_minutes(),
        ),
    ];
    let keys = [revoked, day_key(2, bad_tek), day_key(3, v11_tek)];
    let report = match_keys(&keys, &sightings, &RiskConfig::default());
    let found: Vec<(u64, u32)> = report.events.iter().map(|e| (e.key_id, e.venue)).collect();
    assert_eq!(found, [(3, 3)]);
    let s = report.stats;
    assert_eq!((s.keys, s.keys_revoked, s.bad_metadata), (3, 1, 1));
    // Two keys × the 25 intervals within ±12 of the one stored window: the revoked key is
    // not looked up.
    assert_eq!(s.probes, 2 * 25);
    assert_eq!(s.matched_sightings, 1);
}

/// A sighting matched by two keys (here the same TEK published twice under two ids, the only
/// practical way to collide) is reported once for each; the venue hour counts both keys.
#[test]
fn a_sighting_matched_by_two_keys_is_reported_for_both() {
    let t = tek(14);
    let sightings = vec![sighting(t, TEN_AM, 1, ten_close_minutes())];
    let report = match_keys(
        &[day_key(1, t), day_key(2, t)],
        &sightings,
        &RiskConfig::default(),
    );
    let ids: Vec<u64> = report.events.iter().map(|e| e.key_id).collect();
    assert_eq!(ids, [1, 2]);
    assert_eq!(report.venue_hours[0].infectious_keys, 2);
    assert_eq!(report.stats.matched_sightings, 2);
}

/// Report type and infectiousness weights scale the score as configured (10 immediate minutes
/// = 600 s × 1.5 = 900 at 100 %); missing report types take the configured default; a key of
/// infectiousness "none" is skipped; windows below the minimum score are dropped and counted.
#[test]
fn weights_defaults_and_minimum_score() {
    let config = RiskConfig {
        report_type_weights: venuetrace::matching::ReportTypeWeights {
            confirmed_test: 1.0,
            confirmed_clinical_diagnosis: 0.8,
            self_report: 0.5,
            recursive: 1.0,
        },
        infectiousness_weights: venuetrace::matching::InfectiousnessWeights {
            standard: 1.0,
            high: 2.0,
        },
        default_report_type: ReportType::ConfirmedClinicalDiagnosis,
        minimum_window_score: 500.0,
        ..RiskConfig::default()
    };
    let with = |id: u64, report_type: Option<ReportType>, onset: Option<i32>| {
        let mut key = day_key(id, tek(20 + id as u8));
        key.key.report_type = report_type;
        key.key.days_since_onset_of_symptoms = onset;
        key
    };
    let keys = [
        with(0, Some(ReportType::ConfirmedTest), None), // 900
        with(1, Some(ReportType::SelfReport), None),    // 450: below 500, dropped
        with(2, Some(ReportType::ConfirmedTest), Some(0)), // high: 1800
        with(3, None, None),                            // default clinical: 720
        with(4, Some(ReportType::Unknown), None),       // unknown = missing: 720
        with(5, Some(ReportType::ConfirmedTest), Some(-10)), // none: skipped
    ];
    let sightings: Vec<VenueSighting> = keys
        .iter()
        .map(|k| sighting(k.key.tek, TEN_AM, k.id as u32, ten_close_minutes()))
        .collect();
    let report = match_keys(&keys, &sightings, &config);
    let scores: Vec<(u64, f64, Infectiousness, ReportType)> = report
        .events
        .iter()
        .map(|e| (e.key_id, e.score, e.infectiousness, e.report_type))
        .collect();
    use Infectiousness::{High, Standard};
    use ReportType::{ConfirmedClinicalDiagnosis as Clinical, ConfirmedTest};
    assert_eq!(
        scores,
        [
            (0, 900.0, Standard, ConfirmedTest),
            (2, 1800.0, High, ConfirmedTest),
            (3, 720.0, Standard, Clinical),
            (4, 720.0, Standard, Clinical),
        ]
    );
    let s = report.stats;
    assert_eq!((s.windows, s.windows_below_minimum), (5, 1));
    assert_eq!(s.keys_not_infectious, 1);
    // The dropped window's venue has no venue hour.
    assert!(report.venue_hours.iter().all(|h| h.venue != 1));
}

/// Co-presence counts the distinct unmatched RPIs heard at the venue during the minutes an
/// infectious key was heard, in that hour: not those heard only before or after, nor at
/// another venue; an RPI heard by two gateways counts once. The visitor estimate is
/// `RPIs − RPI-minutes / (R + 1)` with R = 15: 2 − 7/16 = 1.56 → 2.
#[test]
fn co_presence_counts_other_rpis_during_exposure_minutes() {
    let infected = tek(30);
    let other = |byte: u8, venue: u32, window_start: u32, minutes: std::ops::RangeInclusive<u8>| {
        sighting(
            tek(byte),
            window_start,
            venue,
            minutes.map(|m| minute(m, 1, -70, -70)).collect(),
        )
    };
    let mut sightings = vec![
        sighting(
            infected,
            TEN_AM,
            1,
            (0..=4).map(|m| minute(m, 2, -60, -60)).collect(),
        ),
        other(31, 1, TEN_AM, 0..=9), // A: heard in exposure minutes 0..=4 (5)
        other(32, 1, TEN_AM, 3..=6), // B: exposure minutes 3, 4 (2)
        other(33, 1, TEN_AM, 6..=9), // C: only after
        other(34, 2, TEN_AM, 0..=4), // D: another venue
        other(35, 1, TEN_AM - 1, 0..=9), // E: the window before
    ];
    let mut second_gateway = sightings[1].clone();
    second_gateway.rssi_calibration_db = 3;
    sightings.push(second_gateway); // A again, by another gateway of venue 1
    let report = match_keys(&[day_key(1, infected)], &sightings, &RiskConfig::default());
    assert_eq!(report.venue_hours.len(), 1);
    let hour = &report.venue_hours[0];
    assert_eq!(hour.exposure_minutes, 5);
    assert_eq!(hour.co_present_rpis, 2);
    assert_eq!(hour.co_present_rpi_minutes, 7);
    assert_eq!(hour.co_present_visitors, 2);
    let json = serde_json::to_string(&report).expect("serialize");
    for t in 30..=35 {
        let rpi = tek(t).rpik().cipher().rpi(Enin(TEN_AM));
        assert!(!json.contains(&rpi.to_hex()), "no RPI in the output");
    }
}

/// A pseudo-random scenario: 600 keys over two days, 20,000 sightings, ~1 % of the keys'
/// intervals planted at 40 venues (several keys and gateways per venue).
fn scenario() -> (Vec<MatchKey>, Vec<VenueSighting>) {
    let mut state = 0x9E37_79B9_7F4A_7C15u64;
    let mut next = move || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state
    };
    let keys: Vec<MatchKey> = (0..600u32)
        .map(|i| {
            let mut bytes = [0u8; 16];
            bytes[..4].copy_from_slice(&i.to_le_bytes());
            bytes[4] = 0xAB;
            let day = DAY + i % 2;
            MatchKey {
                id: u64::from(i) + 1000,
                key: diagnosis_key(Tek::from_bytes(bytes), day * 144, 144),
            }
        })
        .collect();
    let mut sightings = Vec::new();
    for k in &keys {
        for i in 0..144 {
            if next() % 100 == 0 {
                let interval = k.key.rolling_start.0 + i;
                let venue = (next() % 40) as u32;
                let mut minutes = Vec::new();
                for m in 0..10 {
                    if next() % 3 != 0 {
                        minutes.push(minute(m, 2, -55 - (next() % 40) as i8, -50));
                    }
                }
                sightings.push(sighting(k.key.tek, interval, venue, minutes));
            }
        }
    }
    let mut filler = 0u32;
    while sightings.len() < 20_000 {
        let mut bytes = [0x77u8; 16];
        bytes[..4].copy_from_slice(&filler.to_le_bytes());
        filler += 1;
        let interval = DAY * 144 + (next() % 288) as u32;
        let venue = (next() % 40) as u32;
        let first = (next() % 10) as u8;
        sightings.push(sighting(
            Tek::from_bytes(bytes),
            interval,
            venue,
            (first..10).map(|m| minute(m, 1, -80, -75)).collect(),
        ));
    }
    (keys, sightings)
}

/// The same input gives the same report, byte for byte: on 1, 2 or 5 threads, with the index
/// built on 1 or 3 threads, and with the sightings in another order.
#[test]
fn reports_are_deterministic() {
    let (keys, mut sightings) = scenario();
    let config = RiskConfig::default();
    let run = |sightings: &[VenueSighting], build: usize, threads: usize| {
        let report = SightingIndex::build(sightings, build).match_keys(&keys, &config, threads);
        serde_json::to_string(&report).expect("serialize")
    };
    let reference = run(&sightings, 1, 1);
    let parsed: serde_json::Value = serde_json::from_str(&reference).expect("json");
    assert!(
        parsed["events"].as_array().is_some_and(|e| e.len() > 500),
        "the scenario has events"
    );
    assert_eq!(run(&sightings, 3, 2), reference);
    assert_eq!(run(&sightings, 1, 5), reference);
    sightings.reverse();
    assert_eq!(run(&sightings, 2, 2), reference);
    let direct = serde_json::to_string(&match_keys(&keys, &sightings, &config)).expect("json");
    assert_eq!(direct, reference);
}

/// The events of a [`MatchReport`] as (venue, hour) pairs.
fn venue_hours(report: &MatchReport) -> BTreeSet<(u32, i64)> {
    report
        .venue_hours
        .iter()
        .map(|h| (h.venue, h.hour_start_unix_s))
        .collect()
}

/// A simulated city day end to end: each venue's adverts go through the gateway's aggregator,
/// the closed windows become venue sightings, and the infected GAEN phones' TEKs (from the
/// ground truth) are matched. Every venue-hour where an infected GAEN phone was present is
/// found and no other (recall 1, precision ≥ 0.95), and the co-present visitor estimates
/// (rotation every 10 min, as the simulator does) track the ground truth's co-present GAEN
/// phones: within 15 % in total over all venue-hours, and within ±50 % + 2 phones for each
/// venue-hour (the simulator rotates every phone at the same instants, the estimator's worst
/// case; see the module documentation).
#[test]
fn simulated_venue_day_matches_ground_truth() {
    // 06:00–22:00 UTC, few enough infected phones that some venue-hours are clean.
    let sim = SimConfig {
        seed: 7,
        phones: 2000,
        infected_share: 0.012,
        ..SimConfig::default()
    };
    let city = City::new(&sim).expect("valid sim config");
    let truth = city.ground_truth();
    let venue_ids: Vec<String> = city.venue_ids().map(str::to_owned).collect();
    let venue_no: BTreeMap<&str, u32> = venue_ids
        .iter()
        .enumerate()
        .map(|(i, id)| (id.as_str(), i as u32))
        .collect();

    let mut sightings = Vec::new();
    for (venue, id) in venue_ids.iter().enumerate() {
        let mut aggregator = Aggregator::new(AggregatorConfig::default());
        let mut windows = Vec::new();
        for advert in city.adverts(id).expect("venue") {
            windows.extend(aggregator.observe(&advert));
        }
        windows.extend(aggregator.close_early());
        for w in windows {
            for s in w.sightings {
                sightings.push(VenueSighting {
                    venue: venue as u32,
                    window_start: w.start,
                    window_minutes: w.intervals * 10,
                    rpi: s.rpi,
                    aem: s.aem,
                    rssi_calibration_db: 0,
                    minutes: s.minutes,
                });
            }
        }
    }

    let mut keys = Vec::new();
    for phone in &truth.phones {
        if !(phone.infected && phone.kind == PhoneKind::Gaen) {
            continue;
        }
        for (n, t) in phone.teks.iter().enumerate() {
            keys.push(MatchKey {
                id: u64::from(phone.id) * 10 + n as u64,
                key: diagnosis_key(
                    Tek::from_hex(&t.key_data).expect("hex key"),
                    t.rolling_start_interval_number,
                    i64::from(t.rolling_period),
                ),
            });
        }
    }
    let config = RiskConfig {
        co_presence_rotation_minutes: 10.0,
        ..RiskConfig::default()
    };
    let report = match_keys(&keys, &sightings, &config);

    let exposed = truth.exposed_venue_hours();
    assert!(
        exposed.len() >= 10,
        "only {} exposed venue-hours",
        exposed.len()
    );
    let expected: BTreeSet<(u32, i64)> = exposed
        .iter()
        .map(|h| (venue_no[h.venue.as_str()], h.hour_start_unix_s as i64))
        .collect();
    let found = venue_hours(&report);
    let all_hours = 3 * 16;
    assert!(
        expected.len() < all_hours - 5,
        "{} of {all_hours} venue-hours exposed: precision would not be tested",
        expected.len()
    );
    let missed: Vec<_> = expected.difference(&found).collect();
    assert!(missed.is_empty(), "missed venue-hours {missed:?}");
    let extra = found.difference(&expected).count();
    let precision = 1.0 - extra as f64 / found.len() as f64;
    assert!(precision >= 0.95, "precision {precision}: {extra} extra");
    assert_eq!(report.stats.replay_cut, 0, "no simulated phone replays");
    assert_eq!(report.stats.bad_metadata, 0);

    let truth_by_hour: BTreeMap<(u32, i64), &venuetrace::sim::ExposedVenueHour> = exposed
        .iter()
        .map(|h| ((venue_no[h.venue.as_str()], h.hour_start_unix_s as i64), h))
        .collect();
    let (mut total_estimate, mut total_truth) = (0.0, 0.0);
    for hour in &report.venue_hours {
        let Some(t) = truth_by_hour.get(&(hour.venue, hour.hour_start_unix_s)) else {
            continue;
        };
        let estimate = f64::from(hour.co_present_visitors);
        let actual = t.co_present_gaen_phones as f64;
        eprintln!(
            "venue {} hour {}: {} RPIs, {} RPI-minutes, estimate {estimate}, truth {actual}",
            hour.venue, hour.hour_start_unix_s, hour.co_present_rpis, hour.co_present_rpi_minutes
        );
        assert!(
            (estimate - actual).abs() <= 0.5 * actual + 2.0,
            "venue {} hour {}: estimate {estimate}, truth {actual}",
            hour.venue,
            hour.hour_start_unix_s
        );
        assert!(f64::from(hour.co_present_rpis) >= actual * 0.9);
        total_estimate += estimate;
        total_truth += actual;
    }
    let error = (total_estimate - total_truth).abs() / total_truth;
    eprintln!("co-present visitors: estimate {total_estimate}, truth {total_truth}");
    assert!(error <= 0.15, "total co-present error {error}");
}
