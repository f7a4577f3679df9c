//! Exposure matching at the authority: diagnosis keys of confirmed cases against what gateways
//! sealed per window, as a phone's Exposure Notification framework does it in "ExposureWindow"
//! mode (GAEN v2), per venue instead of per phone.
//!
//! Owns the matching inputs ([`VenueSighting`], [`MatchKey`]), the risk model and its defaults
//! ([`RiskConfig`]), the compact in-memory form of stored sightings ([`SightingTable`]), the
//! index over them ([`DayPart`] per UTC day, assembled into a [`SightingIndex`]; [`DayCache`]
//! keeps day parts between runs) and the results ([`ExposureEvent`], [`VenueHour`],
//! [`MatchStats`] in a [`MatchReport`]). Pure: values in,
//! values out; no I/O, no clock, no tokio, no SQL. Reading sightings and keys from the store,
//! storing events, incremental reruns and presenting results are the authority's; the crypto is
//! [`crate::crypto`]'s and the hash join's data structure is [`crate::rpi_index`]'s.
//!
//! # Pipeline
//!
//! 1. **Join.** Every key that counts (not revoked, not of infectiousness "none") has its RPIs
//!    derived for its intervals `rolling_start .. rolling_start + rolling_period`, 256 keys at a
//!    time into one buffer, and looked up in the index. An RPI of interval *i* matches a
//!    sighting only in the minutes observed within ±[`RiskConfig::tolerance_intervals`]
//!    intervals of *i* (the Cryptography Specification's ±2 h; clock skew between phone and
//!    gateway). Only the key's own intervals are derived: a phone never broadcasts another one.
//!    The index is split by UTC day of the sightings' windows, so each part is smaller and a
//!    key is only looked up in the days its intervals ± 2 h can reach (its day, and the first
//!    or last 12 intervals in the neighbouring days; which intervals is decided per day, from
//!    the whole day's observed minutes, so a day split into several parts finds the same).
//!    Keys are processed in rolling-start order,
//!    so consecutive keys hit the same (cache-warm) part; the keys are split into contiguous
//!    chunks over `threads` threads (`std::thread::scope`).
//! 2. **Metadata.** A hit's AEM is decrypted with the key's AEMK and the RPI; a version that is
//!    not 1.x drops the hit (`bad_metadata`). The TX power comes from the metadata.
//! 3. **Attenuation** per minute: `tx_power − (rssi + rssi_calibration_db)`, floored at 0 (and
//!    capped at 255): the minute's mean RSSI gives the *typical* attenuation, its max RSSI (the
//!    strongest report) the *minimum* attenuation.
//! 4. **Replay cut.** A phone sends one RPI for at most 20 min (the Bluetooth Specification
//!    rotates address and RPI every 10–20 min); an RPI heard at one venue over a longer span
//!    keeps only its first [`RiskConfig::max_rpi_run_minutes`] minutes (`replay_cut`).
//! 5. **Exposure windows** per (key, venue): the observed minutes (several RPIs or gateways in
//!    one minute merge: report-weighted mean typical, lowest minimum) are grouped into windows
//!    of at most [`RiskConfig::max_window_minutes`] from their first minute. Each minute is a
//!    scan instance; the gateway summarises a continuous scan per minute, so
//!    `seconds_since_last_scan` is 60 for the first minute of a window and consecutive minutes,
//!    and the gap to the previous observed minute (× 60 s) after a gap, capped at
//!    [`RiskConfig::max_seconds_since_last_scan`] (300 s: a phone scans at least every 5 min,
//!    so it never credits more than that to one sighting; missed minutes up to that are
//!    credited as presence, as a phone would).
//! 6. **Score** (GAEN v2): `Σ_scan seconds_since_last_scan × bucket_weight(typical) ×
//!    report_type_weight × infectiousness_weight`; windows scoring below
//!    [`RiskConfig::minimum_window_score`] are dropped (`windows_below_minimum`).
//! 7. **Venue hours.** Per venue and UTC hour: events, infectious keys, exposure minutes
//!    (minutes with ≥ 1 infectious key heard), scores, and co-presence (below).
//!
//! # Co-presence: counting the exposed without identifying them
//!
//! [`VenueHour::co_present_rpis`] counts the distinct RPIs *not matched by any key* heard at the
//! venue in that hour's exposure minutes. An RPI is a phone-interval, not a phone: a visitor
//! who stays 40 minutes shows 4 or 5 RPIs. [`VenueHour::co_present_visitors`] estimates phones
//! without linking RPIs to each other (which would be tracking): each phone shows one RPI plus
//! one per rotation, and rotates about once per `R` minutes of presence
//! ([`RiskConfig::co_presence_rotation_minutes`]); during a rotation minute both RPIs are heard.
//! So, over the exposure minutes, `RPIs = phones + rotations`,
//! `RPI-minutes = phone-minutes + rotations` and `rotations ≈ phone-minutes / R`, which gives
//! `phones ≈ RPIs − RPI-minutes / (R + 1)` (rounded, clamped to `1..=RPIs`). The estimate is
//! unbiased when phones rotate at independent times, as real phones do; when all phones rotate
//! at the same instants (the simulator rotates at interval boundaries) one venue-hour can be
//! off by up to about ±50 %, though the errors average out over many venue-hours (the
//! simulated-day test checks both). Only GAEN phones are counted; BlueTrace phones carry no
//! identifier. A "within near attenuation" count of co-present phones is *not* given: their
//! TX power is in their AEMs, which only their own (unpublished) keys decrypt, and an
//! attenuation to the gateway says nothing about the distance to the infectious phone.
//!
//! # Cost
//!
//! Measured at full scale by `examples/match_scale.rs` (figures in docs/performance.md, M3):
//! 3 M keys against 1e8 sightings over 21 days on 2 threads in 4.1–4.6 s (0.25 % of the
//! derived RPIs found; 7.5–8.7 s at 0.72 %), of which ~2.8 s is the join at the index's speed
//! (~140 M derived-RPI lookups/s) and the rest the per-match work (decrypt, windows, venue
//! hours, co-presence: 1.4–1.9 µs per matched sighting). Memory: ~96 bytes per sighting for
//! the compact table (40-byte row, ~7 minutes of 8 bytes) and ~42 for its index: ~14 GB at
//! 1e8. Building the index takes 13–17 s for 1e8 on 2 threads, so it is built once per day
//! and kept ([`DayCache`]), not per run.
//!
//! Privacy: no RPI, key or AEM appears in any output; events name a key by its store row id.
//! Determinism: the same inputs give the same report, byte for byte, whatever the thread count.

use crate::aggregate::MinuteRssi;
use crate::crypto::{Aem, Enin, INTERVALS_PER_DAY, Rpi};
use crate::export::{DiagnosisKey, ReportType};
use crate::rpi_index::{RpiIndex, TooManyRows};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::fmt;
use std::sync::Arc;
use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};

/// Days-since-onset values the infectiousness map covers: −14 ..= 14 (as in
/// `DiagnosisKeysDataMapping`); other values map to [`Infectiousness::None`].
pub const ONSET_DAYS: usize = 29;
const FIRST_ONSET_DAY: i32 = -14;
/// Keys derived into one probe buffer: 256 × 144 RPIs = 590 KB, inside a core's L2 (measured
/// in `benches/rpi_lookup.rs`).
const BATCH_KEYS: usize = 256;
/// Pieces of a probe buffer at least this long on average are looked up where they are rather
/// than copied together: the index looks probes up in chunks of 64.
const LONG_PIECE: usize = 64;

// ---------------------------------------------------------------------------------------------
// Inputs.

/// What one gateway sealed about one RPI in one window, as the store holds it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VenueSighting {
    /// The store's venue number.
    pub venue: u32,
    /// First interval of the window.
    pub window_start: Enin,
    /// Window length, minutes.
    pub window_minutes: u32,
    /// The RPI heard.
    pub rpi: Rpi,
    /// Its AEM, as first heard in the window.
    pub aem: Aem,
    /// The gateway's receiver calibration, dB, added to every RSSI.
    pub rssi_calibration_db: i32,
    /// Per-minute RSSI statistics, by minute offset from `window_start`.
    pub minutes: Vec<MinuteRssi>,
}

/// A diagnosis key with the store's id for it (what events name instead of the key).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MatchKey {
    /// The store's key row id.
    pub id: u64,
    /// The key and what its export said about it.
    pub key: DiagnosisKey,
}

/// How infectious a case was on the key's day (`Infectiousness` in the EN API).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Infectiousness {
    /// Not infectious: the key's exposures are dropped, as on phones.
    None,
    /// Standard infectiousness.
    Standard,
    /// High infectiousness.
    High,
}

// ---------------------------------------------------------------------------------------------
// The risk model.

/// The risk model and matching parameters. `Default` is the GAEN v2 / EN Express defaults where
/// they exist; each field says where its default comes from. Deserializes with every field
/// optional and unknown fields rejected, so the authority's configuration can embed it; check
/// values with [`RiskConfig::validate`].
///
/// Sources: ENX = Exposure Notifications Express configuration defaults
/// (google/exposure-notifications-android, `doc/enexpress-config.md`); EN API = Google's
/// `DailySummariesConfig` / `DiagnosisKeysDataMapping` and Apple's `ENExposureConfiguration`
/// documentation; EN Crypto / EN Bluetooth = the Exposure Notification Cryptography and
/// Bluetooth Specifications v1.2.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RiskConfig {
    /// An RPI of interval *i* counts only in minutes observed in intervals *i* ± this many.
    /// Default 12 (±2 h: EN Crypto's matching tolerance; DESIGN.md §2).
    pub tolerance_intervals: u32,
    /// Longest run of one RPI at one venue that is kept, minutes; later minutes are replays.
    /// Default 20 (EN Bluetooth: address and RPI rotate every 10–20 min).
    pub max_rpi_run_minutes: u32,
    /// Longest exposure window, minutes from its first scan instance. Default 30 (EN API:
    /// `ExposureWindow`s last at most 30 minutes).
    pub max_window_minutes: u32,
    /// Most seconds one scan instance is credited after a gap. Default 300 (EN Bluetooth: a
    /// phone's scans must discover an advertiser within 5 minutes, so phones credit at most
    /// ~300 s per scan; real `ScanInstance`s show 180–300 s).
    pub max_seconds_since_last_scan: u32,
    /// Upper edges (inclusive) of the immediate, near and medium buckets for a scan's typical
    /// attenuation, dB, increasing; above the last is "other". Default 55/63/73 dB from
    /// DESIGN.md §2. NOTE: no GAEN source has exactly these: ENX defaults to 30/50/60, Apple's
    /// v2 framework to 50/70/90, the LFPH "narrow net" recommendation is 55/63/70 (v1) and
    /// 55/67/75 (v2). 55/63/73 is kept as the project's agreed value.
    pub attenuation_thresholds_db: [u8; 3],
    /// Weights (0–2.5, i.e. 0–250 %) of a second in the immediate, near, medium and other
    /// buckets. Default ENX: 150 %, 100 %, 50 %, 0 %.
    pub attenuation_weights: [f64; 4],
    /// Weight per report type. Default ENX: 100 % each (recursive: no ENX field, Apple marks it
    /// unused; 100 % like the others).
    pub report_type_weights: ReportTypeWeights,
    /// Report type of keys whose export gives none (or `UNKNOWN`, or a value this version does
    /// not know); one of the four weighted types. Default `CONFIRMED_TEST` (the keys an
    /// authority imports are those of cases its health service confirmed). ENX maps a missing
    /// report type to `SELF_REPORT` (`reportTypeNoneMap` = 3); with the default weights both
    /// score the same.
    #[serde(with = "report_type_name")]
    pub default_report_type: ReportType,
    /// Weight per infectiousness. Default ENX: standard 100 %, high 100 %.
    pub infectiousness_weights: InfectiousnessWeights,
    /// Infectiousness by days since onset of symptoms, entry 0 for day −14 up to entry 28 for
    /// day +14. Default ENX (`symptomOnsetToInfectiousnessMap` = 0x0401555AA9400000): none for
    /// −14..=−4, standard −3..=−2, high −1..=3, standard 4..=10, none 11..=14.
    pub infectiousness_by_days_since_onset: [Infectiousness; ONSET_DAYS],
    /// Infectiousness of keys without days since onset. Default standard (ENX: the map's
    /// "none given" entry is standard).
    pub default_infectiousness: Infectiousness,
    /// Windows scoring below this are dropped. Default 0 (EN API: "use 0 to consider all
    /// ExposureWindows (recommended)").
    pub minimum_window_score: f64,
    /// Mean minutes between two RPI rotations of a phone present at a venue, for the visitor
    /// estimate of [`VenueHour::co_present_visitors`]. Default 15 (EN Bluetooth: every 10–20
    /// min; the simulator rotates every 10).
    pub co_presence_rotation_minutes: f64,
}

/// Weights (0–2.5) of the report types that count.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReportTypeWeights {
    /// `CONFIRMED_TEST`.
    pub confirmed_test: f64,
    /// `CONFIRMED_CLINICAL_DIAGNOSIS`.
    pub confirmed_clinical_diagnosis: f64,
    /// `SELF_REPORT`.
    pub self_report: f64,
    /// `RECURSIVE` (reserved by the specification).
    pub recursive: f64,
}

/// Weights (0–2.5) of the infectiousness levels that count.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct InfectiousnessWeights {
    /// [`Infectiousness::Standard`].
    pub standard: f64,
    /// [`Infectiousness::High`].
    pub high: f64,
}

impl Default for RiskConfig {
    fn default() -> Self {
        use Infectiousness::{High as H, None as N, Standard as S};
        Self {
            tolerance_intervals: 12,
            max_rpi_run_minutes: 20,
            max_window_minutes: 30,
            max_seconds_since_last_scan: 300,
            attenuation_thresholds_db: [55, 63, 73],
            attenuation_weights: [1.5, 1.0, 0.5, 0.0],
            report_type_weights: ReportTypeWeights {
                confirmed_test: 1.0,
                confirmed_clinical_diagnosis: 1.0,
                self_report: 1.0,
                recursive: 1.0,
            },
            default_report_type: ReportType::ConfirmedTest,
            infectiousness_weights: InfectiousnessWeights {
                standard: 1.0,
                high: 1.0,
            },
            #[rustfmt::skip]
            infectiousness_by_days_since_onset: [
                N, N, N, N, N, N, N, N, N, N, N, // −14 ..= −4
                S, S,                            // −3, −2
                H, H, H, H, H,                   // −1 ..= 3
                S, S, S, S, S, S, S,             // 4 ..= 10
                N, N, N, N,                      // 11 ..= 14
            ],
            default_infectiousness: S,
            minimum_window_score: 0.0,
            co_presence_rotation_minutes: 15.0,
        }
    }
}

/// One problem in a [`RiskConfig`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RiskConfigProblem {
    /// The field's path, e.g. `report_type_weights.self_report`.
    pub key: &'static str,
    /// What is wrong with it.
    pub message: String,
}

impl fmt::Display for RiskConfigProblem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.key, self.message)
    }
}

impl RiskConfig {
    /// Every problem with the values, all at once (empty: valid). Matching runs on any values
    /// without panicking; these are the ones that make no sense.
    pub fn validate(&self) -> Vec<RiskConfigProblem> {
        let mut problems = Vec::new();
        let mut problem = |key: &'static str, message: String| {
            problems.push(RiskConfigProblem { key, message });
        };
        if self.tolerance_intervals > INTERVALS_PER_DAY {
            problem(
                "tolerance_intervals",
                format!("{} is more than a day (144)", self.tolerance_intervals),
            );
        }
        for (key, value) in [
            ("max_rpi_run_minutes", self.max_rpi_run_minutes),
            ("max_window_minutes", self.max_window_minutes),
        ] {
            if value == 0 {
                problem(key, "must be at least 1 minute".to_owned());
            }
        }
        if self.max_seconds_since_last_scan < 60 {
            problem(
                "max_seconds_since_last_scan",
                format!(
                    "{} is less than one gateway scan (60 s)",
                    self.max_seconds_since_last_scan
                ),
            );
        }
        let [t0, t1, t2] = self.attenuation_thresholds_db;
        if !(t0 < t1 && t1 < t2) {
            problem(
                "attenuation_thresholds_db",
                format!("{t0}/{t1}/{t2} must increase (immediate < near < medium)"),
            );
        }
        if let Some(w) = self
            .attenuation_weights
            .iter()
            .find(|w| !(0.0..=2.5).contains(*w))
        {
            problem(
                "attenuation_weights",
                format!("{w} is outside 0..=2.5 (0–250 %)"),
            );
        }
        let r = self.report_type_weights;
        let i = self.infectiousness_weights;
        for (key, weight) in [
            ("report_type_weights.confirmed_test", r.confirmed_test),
            (
                "report_type_weights.confirmed_clinical_diagnosis",
                r.confirmed_clinical_diagnosis,
            ),
            ("report_type_weights.self_report", r.self_report),
            ("report_type_weights.recursive", r.recursive),
            ("infectiousness_weights.standard", i.standard),
            ("infectiousness_weights.high", i.high),
        ] {
            if !(0.0..=2.5).contains(&weight) {
                problem(key, format!("{weight} is outside 0..=2.5 (0–250 %)"));
            }
        }
        if self.report_type_weight(self.default_report_type).is_none() {
            problem(
                "default_report_type",
                format!(
                    "{} is not one of the weighted report types",
                    self.default_report_type
                ),
            );
        }
        if !(self.minimum_window_score.is_finite() && self.minimum_window_score >= 0.0) {
            problem(
                "minimum_window_score",
                format!("{} must be a finite number ≥ 0", self.minimum_window_score),
            );
        }
        let rot = self.co_presence_rotation_minutes;
        if !(rot.is_finite() && rot > 0.0) {
            problem(
                "co_presence_rotation_minutes",
                format!("{rot} must be a finite number > 0"),
            );
        }
        problems
    }

    /// The weight of a report type that counts; `None` for the others.
    fn report_type_weight(&self, report_type: ReportType) -> Option<f64> {
        let w = &self.report_type_weights;
        match report_type {
            ReportType::ConfirmedTest => Some(w.confirmed_test),
            ReportType::ConfirmedClinicalDiagnosis => Some(w.confirmed_clinical_diagnosis),
            ReportType::SelfReport => Some(w.self_report),
            ReportType::Recursive => Some(w.recursive),
            ReportType::Unknown | ReportType::Revoked | ReportType::Unrecognized(_) => None,
        }
    }

    /// The report type a key is scored as: its own if it is a weighted one, else the default.
    /// (Revoked keys never get here.)
    pub fn effective_report_type(&self, key: &DiagnosisKey) -> ReportType {
        match key.report_type {
            Some(rt) if self.report_type_weight(rt).is_some() => rt,
            _ => self.default_report_type,
        }
    }

    /// A key's infectiousness: from its days since onset (outside −14..=14: none), or the
    /// default when it has none.
    pub fn infectiousness(&self, key: &DiagnosisKey) -> Infectiousness {
        match key.days_since_onset_of_symptoms {
            None => self.default_infectiousness,
            Some(days) => usize::try_from(i64::from(days) - i64::from(FIRST_ONSET_DAY))
                .ok()
                .and_then(|i| self.infectiousness_by_days_since_onset.get(i).copied())
                .unwrap_or(Infectiousness::None),
        }
    }

    fn infectiousness_weight(&self, infectiousness: Infectiousness) -> f64 {
        match infectiousness {
            Infectiousness::None => 0.0,
            Infectiousness::Standard => self.infectiousness_weights.standard,
            Infectiousness::High => self.infectiousness_weights.high,
        }
    }

    /// Bucket of a typical attenuation: 0 immediate, 1 near, 2 medium, 3 other.
    pub fn bucket(&self, attenuation_db: u8) -> usize {
        self.attenuation_thresholds_db
            .iter()
            .position(|&edge| attenuation_db <= edge)
            .unwrap_or(3)
    }

    fn bucket_weight(&self, bucket: usize) -> f64 {
        self.attenuation_weights[bucket.min(3)]
    }
}

/// `ReportType` in the configuration: its `.proto` name, one of the four weighted types.
mod report_type_name {
    use crate::export::ReportType;
    use serde::{Deserialize, Deserializer, Serialize, Serializer, de::Error};

    pub fn serialize<S: Serializer>(value: &ReportType, s: S) -> Result<S::Ok, S::Error> {
        value.serialize(s)
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<ReportType, D::Error> {
        let name = String::deserialize(d)?;
        match name.as_str() {
            "CONFIRMED_TEST" => Ok(ReportType::ConfirmedTest),
            "CONFIRMED_CLINICAL_DIAGNOSIS" => Ok(ReportType::ConfirmedClinicalDiagnosis),
            "SELF_REPORT" => Ok(ReportType::SelfReport),
            "RECURSIVE" => Ok(ReportType::Recursive),
            other => Err(D::Error::custom(format!(
                "unknown report type {other:?}: expected CONFIRMED_TEST, \
                 CONFIRMED_CLINICAL_DIAGNOSIS, SELF_REPORT or RECURSIVE"
            ))),
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Outputs.

/// One observed minute of an exposure window (`ScanInstance` in the EN API).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub struct ScanInstance {
    /// Start of the minute, Unix seconds.
    pub minute_unix_s: i64,
    /// Attenuation from the minute's mean RSSI, dB (report-weighted mean over the key's RPIs
    /// and the venue's gateways heard in that minute).
    pub typical_attenuation_db: u8,
    /// Attenuation from the minute's strongest report, dB.
    pub min_attenuation_db: u8,
    /// Seconds credited to this minute (see the module documentation).
    pub seconds_since_last_scan: u32,
}

/// One exposure window of one key at one venue that passed the minimum score.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct ExposureEvent {
    /// The store's id of the key.
    pub key_id: u64,
    /// The venue.
    pub venue: u32,
    /// Start of the first scan instance's minute, Unix seconds.
    pub start_unix_s: i64,
    /// End of the last scan instance's minute (exclusive), Unix seconds.
    pub end_unix_s: i64,
    /// The observed minutes, in time order.
    pub scan_instances: Vec<ScanInstance>,
    /// Lowest minimum attenuation of the window, dB.
    pub min_attenuation_db: u8,
    /// Mean typical attenuation, weighted by the seconds credited to each minute, dB.
    pub typical_attenuation_db: u8,
    /// Credited minutes (`Σ seconds_since_last_scan / 60`) per bucket: immediate, near, medium,
    /// other.
    pub minutes_by_bucket: [u32; 4],
    /// Weighted seconds: `Σ seconds × bucket weight × report type weight × infectiousness
    /// weight` (≈ seconds of exposure when the weights are 100 %).
    pub score: f64,
    /// The report type the key was scored as.
    pub report_type: ReportType,
    /// The key's infectiousness.
    pub infectiousness: Infectiousness,
    /// The phone's calibrated TX power from its metadata, dBm.
    pub tx_power_dbm: i8,
}

/// What happened at one venue in one UTC hour where an infectious key was heard.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct VenueHour {
    /// The venue.
    pub venue: u32,
    /// Start of the hour, Unix seconds.
    pub hour_start_unix_s: i64,
    /// Exposure events starting in this hour (an event crossing the hour counts in the hour it
    /// starts; its minutes count in both).
    pub exposure_events: u32,
    /// Distinct keys with a scan instance in this hour.
    pub infectious_keys: u32,
    /// Minutes of this hour with at least one infectious key heard.
    pub exposure_minutes: u32,
    /// Highest score of the events starting in this hour (0 if none does).
    pub max_score: f64,
    /// Sum of the scores of the events starting in this hour.
    pub total_score: f64,
    /// Distinct RPIs not matched by any key heard at the venue during this hour's exposure
    /// minutes: phone-intervals (≥ the GAEN phones co-present; see the module documentation).
    pub co_present_rpis: u32,
    /// (RPI, minute) pairs behind `co_present_rpis`: each such RPI, once per exposure minute it
    /// was heard in.
    pub co_present_rpi_minutes: u32,
    /// Estimated distinct GAEN phones among `co_present_rpis` (see the module documentation).
    pub co_present_visitors: u32,
}

/// Counters of one matching run.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
pub struct MatchStats {
    /// Keys given.
    pub keys: u64,
    /// Keys skipped because their report type is `REVOKED`.
    pub keys_revoked: u64,
    /// Keys skipped because their infectiousness is none (days since onset outside the
    /// infectious days), as phones drop them.
    pub keys_not_infectious: u64,
    /// Derived RPIs looked up in the index (over all parts).
    pub probes: u64,
    /// (key, sighting) pairs whose RPI matched in at least one minute within tolerance and whose
    /// metadata decrypted.
    pub matched_sightings: u64,
    /// RPI matches heard only outside ± the tolerance of their interval (dropped).
    pub out_of_tolerance: u64,
    /// RPI matches whose AEM does not decrypt to metadata version 1.x (dropped).
    pub bad_metadata: u64,
    /// (key, venue, RPI) runs longer than the replay limit, cut to their first minutes.
    pub replay_cut: u64,
    /// Exposure windows built (before the minimum score).
    pub windows: u64,
    /// Windows dropped for scoring below the minimum.
    pub windows_below_minimum: u64,
}

impl MatchStats {
    fn add(&mut self, other: &MatchStats) {
        self.keys += other.keys;
        self.keys_revoked += other.keys_revoked;
        self.keys_not_infectious += other.keys_not_infectious;
        self.probes += other.probes;
        self.matched_sightings += other.matched_sightings;
        self.out_of_tolerance += other.out_of_tolerance;
        self.bad_metadata += other.bad_metadata;
        self.replay_cut += other.replay_cut;
        self.windows += other.windows;
        self.windows_below_minimum += other.windows_below_minimum;
    }
}

/// Everything one matching run found.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct MatchReport {
    /// Exposure events, by venue, start, key id, end.
    pub events: Vec<ExposureEvent>,
    /// Venue hours, by venue, hour.
    pub venue_hours: Vec<VenueHour>,
    /// Counters.
    pub stats: MatchStats,
}

/// The number of threads matching uses by default: the machine's available parallelism.
pub fn default_threads() -> usize {
    std::thread::available_parallelism().map_or(1, std::num::NonZero::get)
}

/// Matches `keys` against `sightings`: builds a [`SightingIndex`] and runs
/// [`SightingIndex::match_keys`] with [`default_threads`]. To match several key sets against
/// the same sightings, build the index once instead.
pub fn match_keys(
    keys: &[MatchKey],
    sightings: &[VenueSighting],
    config: &RiskConfig,
) -> MatchReport {
    let threads = default_threads();
    SightingIndex::build(sightings, threads).match_keys(keys, config, threads)
}

// ---------------------------------------------------------------------------------------------
// Compact sighting storage.

/// Most intervals a sighting's minutes can reach past its window start, plus one: minute
/// offsets are a `u8` (at most 255 minutes, 25 intervals, after the window start). Only the
/// minutes count as observations, whatever the window's length; the authority's matching
/// driver relies on this bound to know which days a key can reach.
pub const MAX_SPAN_INTERVALS: u32 = 26;

/// The fixed-size fields of a stored sighting: everything but its per-minute RSSI.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SightingHeader {
    /// The store's venue number.
    pub venue: u32,
    /// First interval of the window.
    pub window_start: Enin,
    /// Window length, minutes.
    pub window_minutes: u32,
    /// The RPI heard.
    pub rpi: Rpi,
    /// Its AEM, as first heard in the window.
    pub aem: Aem,
    /// The gateway's receiver calibration, dB, added to every RSSI.
    pub rssi_calibration_db: i32,
}

/// One row of a [`SightingTable`]: 40 bytes.
#[derive(Clone, Copy)]
struct Row {
    header: SightingHeader,
    /// End of the row's minutes in the table's arena; they start where the previous row's end.
    minutes_end: u32,
}

/// Sightings stored compactly, as matching keeps them in memory: one fixed-size row per
/// sighting (40 bytes) and one arena holding every row's per-minute RSSI back to back (8 bytes a
/// minute). A `Vec<VenueSighting>` costs 64 bytes a row plus one heap block per row for its
/// minutes (≥ 32 bytes with the allocator's header); at 1e8 sightings the difference is
/// several GB, and the table is two allocations instead of 1e8.
///
/// Rows keep the order they were pushed in.
#[derive(Clone, Default)]
pub struct SightingTable {
    rows: Vec<Row>,
    minutes: Vec<MinuteRssi>,
}

impl fmt::Debug for SightingTable {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SightingTable")
            .field("rows", &self.rows.len())
            .field("minutes", &self.minutes.len())
            .finish()
    }
}

/// One sighting of a [`SightingTable`], borrowed from it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SightingRef<'a> {
    /// Venue, window, RPI, AEM and calibration.
    pub header: SightingHeader,
    /// Per-minute RSSI statistics, by minute offset from the window start.
    pub minutes: &'a [MinuteRssi],
}

impl SightingRef<'_> {
    /// The sighting as an owned [`VenueSighting`].
    pub fn to_sighting(&self) -> VenueSighting {
        let h = &self.header;
        VenueSighting {
            venue: h.venue,
            window_start: h.window_start,
            window_minutes: h.window_minutes,
            rpi: h.rpi,
            aem: h.aem,
            rssi_calibration_db: h.rssi_calibration_db,
            minutes: self.minutes.to_vec(),
        }
    }

    /// Intervals the minutes reach past the window start, plus one (1 without minutes).
    fn span_intervals(&self) -> u32 {
        self.minutes
            .iter()
            .map(|m| u32::from(m.minute) / 10 + 1)
            .max()
            .unwrap_or(1)
    }
}

impl SightingTable {
    /// An empty table.
    pub fn new() -> Self {
        Self::default()
    }

    /// An empty table with room for `rows` sightings and `minutes` minutes in all.
    pub fn with_capacity(rows: usize, minutes: usize) -> Self {
        Self {
            rows: Vec::with_capacity(rows),
            minutes: Vec::with_capacity(minutes),
        }
    }

    /// Appends one sighting.
    ///
    /// # Panics
    /// When the table would hold 2^32 minutes or more (the arena's offsets are `u32`: 32 GiB
    /// of minutes; the authority fills one table per UTC day).
    pub fn push(&mut self, header: SightingHeader, minutes: impl IntoIterator<Item = MinuteRssi>) {
        self.minutes.extend(minutes);
        let end = u32::try_from(self.minutes.len())
            .expect("fewer than 2^32 minutes per table (one UTC day of sightings is far less)");
        self.rows.push(Row {
            header,
            minutes_end: end,
        });
    }

    /// Appends a copy of `sighting`.
    pub fn push_sighting(&mut self, sighting: &VenueSighting) {
        self.push(
            SightingHeader {
                venue: sighting.venue,
                window_start: sighting.window_start,
                window_minutes: sighting.window_minutes,
                rpi: sighting.rpi,
                aem: sighting.aem,
                rssi_calibration_db: sighting.rssi_calibration_db,
            },
            sighting.minutes.iter().copied(),
        );
    }

    /// Appends every row of `other`, in order.
    ///
    /// # Panics
    /// As [`push`](Self::push).
    pub fn extend_from(&mut self, other: &SightingTable) {
        self.rows.reserve(other.rows.len());
        self.minutes.reserve(other.minutes.len());
        for s in other.iter() {
            self.push(s.header, s.minutes.iter().copied());
        }
    }

    /// Number of sightings.
    pub fn len(&self) -> usize {
        self.rows.len()
    }

    /// Whether the table holds no sighting.
    pub fn is_empty(&self) -> bool {
        self.rows.is_empty()
    }

    /// Minutes stored over all sightings.
    pub fn minutes_len(&self) -> usize {
        self.minutes.len()
    }

    /// Sighting number `row`, if there is one.
    pub fn get(&self, row: usize) -> Option<SightingRef<'_>> {
        let r = self.rows.get(row)?;
        let start = match row {
            0 => 0,
            _ => self.rows[row - 1].minutes_end as usize,
        };
        Some(SightingRef {
            header: r.header,
            minutes: &self.minutes[start..r.minutes_end as usize],
        })
    }

    /// Sighting number `row` of a row id known to be in range (matching's own ids).
    #[inline]
    fn at(&self, row: u32) -> SightingRef<'_> {
        let row = row as usize;
        let start = match row {
            0 => 0,
            _ => self.rows[row - 1].minutes_end as usize,
        };
        let r = &self.rows[row];
        SightingRef {
            header: r.header,
            minutes: &self.minutes[start..r.minutes_end as usize],
        }
    }

    /// The sightings, in order.
    pub fn iter(&self) -> impl ExactSizeIterator<Item = SightingRef<'_>> + '_ {
        (0..self.rows.len() as u32).map(|row| self.at(row))
    }

    /// Bytes of memory the table holds (its capacity).
    pub fn memory_bytes(&self) -> usize {
        self.rows.capacity() * std::mem::size_of::<Row>()
            + self.minutes.capacity() * std::mem::size_of::<MinuteRssi>()
    }

    /// Releases unused capacity.
    pub fn shrink_to_fit(&mut self) {
        self.rows.shrink_to_fit();
        self.minutes.shrink_to_fit();
    }
}

impl FromIterator<VenueSighting> for SightingTable {
    fn from_iter<I: IntoIterator<Item = VenueSighting>>(iter: I) -> Self {
        let mut table = SightingTable::new();
        for s in iter {
            table.push_sighting(&s);
        }
        table
    }
}

// ---------------------------------------------------------------------------------------------
// The sighting index.

/// An index part or a whole index cannot be built.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum IndexError {
    /// A day part was given a sighting of another day.
    #[error("sighting {row} has its window on UTC day {found}, not on day {day} of its part")]
    OtherDay {
        /// The part's day (days since the Unix epoch).
        day: u32,
        /// The row.
        row: usize,
        /// The row's day.
        found: u32,
    },
    /// More sightings than row ids can address.
    #[error("cannot index {0} sightings: at most {max} per index", max = u32::MAX - 1)]
    TooManyRows(usize),
}

impl From<TooManyRows> for IndexError {
    fn from(e: TooManyRows) -> Self {
        IndexError::TooManyRows(e.0)
    }
}

/// One UTC day's sightings (all of them, or a share: a day can be made of several parts),
/// owned and indexed for matching: an [`RpiIndex`] over their RPIs, the day's observation
/// range, and the rows ordered by (venue, window start) for the co-presence counts. Immutable
/// once built; shared between indexes and matching runs through `Arc`, so the authority can
/// build a day once and keep it (see [`DayCache`]).
pub struct DayPart {
    day: u32,
    table: SightingTable,
    index: RpiIndex,
    /// Observation intervals of the part's minutes, inclusive (empty: `obs_lo > obs_hi`).
    obs_lo: u32,
    obs_hi: u32,
    /// Most intervals one row's minutes span.
    max_span: u32,
    /// The rows ordered by (venue, window start, row).
    by_window: Vec<u32>,
    /// One entry per distinct (venue, window start): its key `venue << 32 | start` and where
    /// its rows begin in `by_window`, by key (searched without touching the sightings).
    windows: Vec<(u64, u32)>,
}

impl fmt::Debug for DayPart {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DayPart")
            .field("day", &self.day)
            .field("sightings", &self.table.len())
            .finish()
    }
}

impl DayPart {
    /// Indexes `table`, whose sightings must all have their window on UTC day `day` (days
    /// since the Unix epoch: `window_start / 144`).
    pub fn build(day: u32, mut table: SightingTable) -> Result<Self, IndexError> {
        table.shrink_to_fit();
        let mut rpis: Vec<Rpi> = Vec::with_capacity(table.len());
        let (mut obs_lo, mut obs_hi, mut max_span) = (u32::MAX, 0, 1);
        let mut keyed: Vec<(u64, u32)> = Vec::with_capacity(table.len());
        for (row, s) in table.iter().enumerate() {
            let start = s.header.window_start.0;
            if start / INTERVALS_PER_DAY != day {
                return Err(IndexError::OtherDay {
                    day,
                    row,
                    found: start / INTERVALS_PER_DAY,
                });
            }
            let span = s.span_intervals();
            max_span = max_span.max(span);
            obs_lo = obs_lo.min(start);
            obs_hi = obs_hi.max(start.saturating_add(span - 1));
            rpis.push(s.header.rpi);
            keyed.push((window_key(s.header.venue, start), row as u32));
        }
        let index = RpiIndex::build(&rpis)?;
        drop(rpis);
        keyed.sort_unstable();
        let mut windows: Vec<(u64, u32)> = Vec::new();
        for (i, &(key, _)) in keyed.iter().enumerate() {
            if windows.last().is_none_or(|w| w.0 != key) {
                windows.push((key, i as u32));
            }
        }
        windows.shrink_to_fit();
        Ok(Self {
            day,
            obs_lo,
            obs_hi,
            max_span,
            by_window: keyed.into_iter().map(|(_, row)| row).collect(),
            windows,
            table,
            index,
        })
    }

    /// One part holding the rows of `parts` (of one day), in order: to merge the small parts
    /// a day accumulates as batches arrive.
    pub fn merge(parts: &[&DayPart]) -> Result<Self, IndexError> {
        let Some(first) = parts.first() else {
            return DayPart::build(0, SightingTable::new());
        };
        let rows = parts.iter().map(|p| p.len()).sum();
        let minutes = parts.iter().map(|p| p.table.minutes_len()).sum();
        let mut table = SightingTable::with_capacity(rows, minutes);
        for p in parts {
            table.extend_from(&p.table);
        }
        DayPart::build(first.day, table)
    }

    /// The UTC day (days since the Unix epoch).
    pub fn day(&self) -> u32 {
        self.day
    }

    /// Number of sightings.
    pub fn len(&self) -> usize {
        self.table.len()
    }

    /// Whether the part holds no sighting.
    pub fn is_empty(&self) -> bool {
        self.table.is_empty()
    }

    /// The sightings.
    pub fn table(&self) -> &SightingTable {
        &self.table
    }

    /// Bytes of memory the part holds: sightings and index.
    pub fn memory_bytes(&self) -> usize {
        self.table.memory_bytes()
            + self.index.memory_bytes()
            + self.by_window.capacity() * 4
            + self.windows.capacity() * std::mem::size_of::<(u64, u32)>()
    }
}

/// The stored sightings indexed for matching, as [`DayPart`]s: per UTC day of their windows,
/// one or more parts. Owns its parts (shared through `Arc`). Build it once per set of stored
/// sightings and match any number of key sets; the authority keeps day parts between runs
/// ([`DayCache`]) and assembles an index of the days a run needs.
///
/// Results depend only on the sightings of each day, not on how a day is split into parts:
/// which of a key's intervals are looked up in a day depends on the whole day's observation
/// range, and each part of the day is probed with the same intervals.
pub struct SightingIndex {
    /// By day; a day's parts in the order given.
    parts: Vec<Arc<DayPart>>,
    /// Row id of each part's first sighting: row ids number the sightings of all parts.
    bases: Vec<u32>,
    rows: usize,
    /// The days with parts, ascending.
    days: Vec<DaySpan>,
    /// Most intervals one sighting's minutes span (1 for 10-minute windows).
    max_span_intervals: u32,
}

/// One UTC day of a [`SightingIndex`]: its parts and their observation range.
struct DaySpan {
    day: u32,
    obs_lo: u32,
    obs_hi: u32,
    parts: std::ops::Range<usize>,
}

impl fmt::Debug for SightingIndex {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SightingIndex")
            .field("sightings", &self.rows)
            .field("days", &self.days.len())
            .field("parts", &self.parts.len())
            .finish()
    }
}

impl SightingIndex {
    /// Indexes `sightings`, one part per UTC day, building the parts on up to `threads`
    /// threads. The sightings are copied into compact tables.
    ///
    /// # Panics
    /// With 2^32 − 1 sightings or more (row ids are `u32`; that many would take over 250 GB).
    pub fn build(sightings: &[VenueSighting], threads: usize) -> Self {
        assert!(
            sightings.len() < u32::MAX as usize,
            "at most 2^32 - 1 sightings per index (row ids are u32)"
        );
        let mut by_day: BTreeMap<u32, SightingTable> = BTreeMap::new();
        for s in sightings {
            by_day
                .entry(s.window_start.0 / INTERVALS_PER_DAY)
                .or_default()
                .push_sighting(s);
        }
        let parts = parallel_map_owned(by_day.into_iter().collect(), threads, |(day, table)| {
            DayPart::build(day, table)
        });
        let parts = parts
            .into_iter()
            .map(|p| p.map(Arc::new))
            .collect::<Result<Vec<_>, _>>()
            .and_then(SightingIndex::from_parts);
        // Rows were grouped by their own day and counted below u32::MAX above.
        parts.expect("sightings grouped by day, fewer than u32::MAX")
    }

    /// An index over `parts`, in any order (they are ordered by day; a day's parts keep their
    /// relative order).
    pub fn from_parts(parts: impl IntoIterator<Item = Arc<DayPart>>) -> Result<Self, IndexError> {
        let mut parts: Vec<Arc<DayPart>> = parts.into_iter().filter(|p| !p.is_empty()).collect();
        parts.sort_by_key(|p| p.day);
        let rows: usize = parts.iter().map(|p| p.len()).sum();
        if rows >= u32::MAX as usize {
            return Err(IndexError::TooManyRows(rows));
        }
        let mut bases = Vec::with_capacity(parts.len());
        let mut base = 0u32;
        let mut days: Vec<DaySpan> = Vec::new();
        for (i, p) in parts.iter().enumerate() {
            bases.push(base);
            base += p.len() as u32;
            match days.last_mut() {
                Some(d) if d.day == p.day => {
                    d.obs_lo = d.obs_lo.min(p.obs_lo);
                    d.obs_hi = d.obs_hi.max(p.obs_hi);
                    d.parts.end = i + 1;
                }
                _ => days.push(DaySpan {
                    day: p.day,
                    obs_lo: p.obs_lo,
                    obs_hi: p.obs_hi,
                    parts: i..i + 1,
                }),
            }
        }
        let max_span_intervals = parts.iter().map(|p| p.max_span).max().unwrap_or(1);
        Ok(Self {
            parts,
            bases,
            rows,
            days,
            max_span_intervals,
        })
    }

    /// Number of sightings indexed.
    pub fn len(&self) -> usize {
        self.rows
    }

    /// Whether no sighting is indexed.
    pub fn is_empty(&self) -> bool {
        self.rows == 0
    }

    /// Number of index parts.
    pub fn parts(&self) -> usize {
        self.parts.len()
    }

    /// Number of UTC days with sightings.
    pub fn days(&self) -> usize {
        self.days.len()
    }

    /// Bytes of memory the index's parts hold: sightings and index.
    pub fn memory_bytes(&self) -> usize {
        self.parts.iter().map(|p| p.memory_bytes()).sum()
    }

    /// The sighting of row id `row` (from a lookup: in range).
    #[inline]
    fn sighting(&self, row: u32) -> SightingRef<'_> {
        let p = self.bases.partition_point(|&b| b <= row) - 1;
        self.parts[p].table.at(row - self.bases[p])
    }

    /// Matches `keys` against the indexed sightings on up to `threads` threads. See the module
    /// documentation for what happens.
    pub fn match_keys(
        &self,
        keys: &[MatchKey],
        config: &RiskConfig,
        threads: usize,
    ) -> MatchReport {
        let mut stats = MatchStats {
            keys: keys.len() as u64,
            ..MatchStats::default()
        };
        let mut plans = Vec::with_capacity(keys.len());
        for (i, mk) in keys.iter().enumerate() {
            let key = &mk.key;
            if key.report_type == Some(ReportType::Revoked) {
                stats.keys_revoked += 1;
                continue;
            }
            let infectiousness = config.infectiousness(key);
            if infectiousness == Infectiousness::None {
                stats.keys_not_infectious += 1;
                continue;
            }
            let first = key.rolling_start.0;
            // A key reaching past the last interval number is cut there (real ENINs are 1e6
            // times smaller).
            let len = key.rolling_period.get().min(u32::MAX - first);
            if len == 0 {
                continue;
            }
            plans.push(KeyPlan {
                key: i,
                first,
                len,
                report_type: config.effective_report_type(key),
                infectiousness,
            });
        }
        // Rolling-start order: consecutive keys probe the same parts, which stay in cache.
        plans.sort_unstable_by_key(|p| (p.first, p.key));

        let threads = threads.clamp(1, plans.len().div_ceil(BATCH_KEYS).max(1));
        let chunks: Vec<&[KeyPlan]> = plans.chunks(plans.len().div_ceil(threads).max(1)).collect();
        let outs = parallel_map(&chunks, threads, |chunk| {
            self.run_chunk(chunk, keys, config)
        });

        let mut events = Vec::new();
        let mut matched = RowSet::new(self.rows);
        for out in outs {
            stats.add(&out.stats);
            events.extend(out.events);
            for row in out.hit_rows {
                matched.insert(row);
            }
        }
        // By (venue, start, key id, end), ties (duplicate key ids) in the deterministic plan
        // order: sort small keys, then move each event once.
        let mut order: Vec<(u32, i64, u64, i64, usize)> = events
            .iter()
            .enumerate()
            .map(|(i, e)| (e.venue, e.start_unix_s, e.key_id, e.end_unix_s, i))
            .collect();
        order.sort_unstable();
        let mut slots: Vec<Option<ExposureEvent>> = events.into_iter().map(Some).collect();
        let events: Vec<ExposureEvent> = order.iter().filter_map(|o| slots[o.4].take()).collect();
        let venue_hours = self.venue_hours(&events, &matched, config, threads);
        MatchReport {
            events,
            venue_hours,
            stats,
        }
    }

    /// The join and the per-key work for one contiguous chunk of keys.
    fn run_chunk(&self, plans: &[KeyPlan], keys: &[MatchKey], config: &RiskConfig) -> ChunkOut {
        let mut stats = MatchStats::default();
        let mut hits: Vec<Hit> = Vec::new();
        let tol = config.tolerance_intervals;
        let mut rpis: Vec<Rpi> = Vec::with_capacity(BATCH_KEYS * INTERVALS_PER_DAY as usize);
        let mut probe_buf: Vec<Rpi> = Vec::new();
        let mut offsets: Vec<usize> = Vec::with_capacity(BATCH_KEYS);
        let mut pieces: Vec<Piece> = Vec::new();
        for (batch_no, batch) in plans.chunks(BATCH_KEYS).enumerate() {
            rpis.clear();
            offsets.clear();
            for plan in batch {
                let offset = rpis.len();
                rpis.resize(offset + plan.len as usize, Rpi::from_bytes([0; 16]));
                keys[plan.key]
                    .key
                    .tek
                    .rpik()
                    .cipher()
                    .derive_into(Enin(plan.first), &mut rpis[offset..]);
                offsets.push(offset);
            }
            for span in &self.days {
                // Which of each key's intervals can have been observed in this day's minutes.
                pieces.clear();
                let mut total = 0usize;
                for (k, plan) in batch.iter().enumerate() {
                    let first = u64::from(plan.first);
                    let last = first + u64::from(plan.len) - 1;
                    let lo = first.max(u64::from(span.obs_lo).saturating_sub(u64::from(tol)));
                    let hi = last.min(u64::from(span.obs_hi) + u64::from(tol));
                    if lo > hi {
                        continue;
                    }
                    let len = (hi - lo + 1) as usize;
                    pieces.push(Piece {
                        plan: batch_no * BATCH_KEYS + k,
                        from: offsets[k] + (lo - first) as usize,
                        probe_start: total,
                        len,
                        first_interval: lo as u32,
                    });
                    total += len;
                }
                if total == 0 {
                    continue;
                }
                stats.probes += total as u64;
                // Every key wholly relevant: probe the buffer in place. Long pieces (most of a
                // key's day, when the day was not observed around the clock) are probed where
                // they are too: copying them would cost a tenth of their lookups. Short ones
                // (the few intervals a neighbouring day can hold) are gathered into one buffer,
                // so that the lookups keep whole batches of cache misses in flight.
                let whole = total == rpis.len();
                let long = !whole && total >= pieces.len() * LONG_PIECE;
                if !whole && !long {
                    probe_buf.clear();
                    for piece in &pieces {
                        probe_buf.extend_from_slice(&rpis[piece.from..piece.from + piece.len]);
                    }
                }
                // Every part of the day with the same probes: how a day is split into parts does
                // not change what is found.
                for p in span.parts.clone() {
                    let (index, base) = (&self.parts[p].index, self.bases[p]);
                    let mut found = |piece: &Piece, offset: usize, rows: &[u32]| {
                        let interval = piece.first_interval + offset as u32;
                        for &r in rows {
                            hits.push(Hit {
                                plan: piece.plan as u32,
                                row: base + r,
                                interval,
                            });
                        }
                    };
                    if long {
                        for piece in &pieces {
                            let probes = &rpis[piece.from..piece.from + piece.len];
                            index.lookup_batch(probes, |pos, rows| found(piece, pos, rows));
                        }
                    } else {
                        let probes: &[Rpi] = if whole { &rpis } else { &probe_buf };
                        index.lookup_batch(probes, |pos, rows| {
                            let piece =
                                &pieces[pieces.partition_point(|p| p.probe_start <= pos) - 1];
                            found(piece, pos - piece.probe_start, rows);
                        });
                    }
                }
            }
        }

        hits.sort_unstable_by_key(|h| (h.plan, h.row, h.interval));
        let mut out = ChunkOut {
            events: Vec::new(),
            hit_rows: hits.iter().map(|h| h.row).collect(),
            stats,
        };
        let mut scratch = Scratch::default();
        let mut rest = &hits[..];
        while let Some(first) = rest.first() {
            let n = rest.partition_point(|h| h.plan == first.plan);
            let plan = &plans[first.plan as usize];
            self.key_events(
                plan,
                &keys[plan.key],
                &rest[..n],
                config,
                &mut scratch,
                &mut out,
            );
            rest = &rest[n..];
        }
        out
    }

    /// Steps 2–6 for one key and its hits (sorted by row).
    fn key_events(
        &self,
        plan: &KeyPlan,
        key: &MatchKey,
        hits: &[Hit],
        config: &RiskConfig,
        scratch: &mut Scratch,
        out: &mut ChunkOut,
    ) {
        let ChunkOut { events, stats, .. } = out;
        let Scratch { obs, kept, minutes } = scratch;
        obs.clear();
        kept.clear();
        minutes.clear();
        let aemk = key.key.tek.aemk();
        let tol = i64::from(config.tolerance_intervals);
        for hit in hits {
            let SightingRef { header: s, minutes } = self.sighting(hit.row);
            let in_tolerance = |m: &MinuteRssi| {
                let observed = i64::from(s.window_start.0) + i64::from(m.minute / 10);
                (observed - i64::from(hit.interval)).abs() <= tol
            };
            if !minutes.iter().any(in_tolerance) {
                stats.out_of_tolerance += 1;
                continue;
            }
            let Ok(metadata) = aemk.decrypt_metadata(&s.rpi, &s.aem) else {
                stats.bad_metadata += 1;
                continue;
            };
            stats.matched_sightings += 1;
            let tx = i64::from(metadata.tx_power_dbm);
            let cal = i64::from(s.rssi_calibration_db);
            let attenuation = |rssi: i8| (tx - (i64::from(rssi) + cal)).clamp(0, 255) as u8;
            for m in minutes.iter().filter(|m| in_tolerance(m)) {
                obs.push(Obs {
                    venue: s.venue,
                    interval: hit.interval,
                    minute: u64::from(s.window_start.0) * 10 + u64::from(m.minute),
                    reports: m.count.max(1),
                    typical: attenuation(m.mean),
                    min: attenuation(m.max),
                    tx: metadata.tx_power_dbm,
                });
            }
        }
        if obs.is_empty() {
            return;
        }

        // Replay cut, per (venue, RPI); an RPI is one interval of this key.
        obs.sort_unstable_by_key(Obs::order);
        let max_run = u64::from(config.max_rpi_run_minutes);
        let mut rest = &obs[..];
        while let Some(first) = rest.first() {
            let n =
                rest.partition_point(|o| (o.venue, o.interval) == (first.venue, first.interval));
            let run = &rest[..n];
            let in_run = run.partition_point(|o| o.minute < first.minute + max_run);
            if in_run < n {
                stats.replay_cut += 1;
            }
            kept.extend_from_slice(&run[..in_run]);
            rest = &rest[n..];
        }

        // One observation per (venue, minute): RPIs (around a rotation) and gateways merged.
        kept.sort_unstable_by_key(|o| {
            let (venue, interval, minute, rest) = o.order();
            (venue, minute, interval, rest)
        });
        let mut weighted_typical = 0u64;
        for &o in kept.iter() {
            match minutes.last_mut() {
                Some(last) if (last.venue, last.minute) == (o.venue, o.minute) => {
                    weighted_typical += u64::from(o.typical) * u64::from(o.reports);
                    last.reports += o.reports;
                    last.min = last.min.min(o.min);
                }
                _ => {
                    if let Some(last) = minutes.last_mut() {
                        last.typical = rounded_div(weighted_typical, u64::from(last.reports));
                    }
                    weighted_typical = u64::from(o.typical) * u64::from(o.reports);
                    minutes.push(o);
                }
            }
        }
        if let Some(last) = minutes.last_mut() {
            last.typical = rounded_div(weighted_typical, u64::from(last.reports));
        }

        // Windows per venue, scored.
        let cap = u64::from(config.max_seconds_since_last_scan);
        let max_window = u64::from(config.max_window_minutes);
        let weight = config.report_type_weight(plan.report_type).unwrap_or(0.0)
            * config.infectiousness_weight(plan.infectiousness);
        let mut start = 0;
        while start < minutes.len() {
            let head = minutes[start];
            let mut end = start + 1;
            while end < minutes.len()
                && minutes[end].venue == head.venue
                && minutes[end].minute < head.minute + max_window
            {
                end += 1;
            }
            stats.windows += 1;
            let window = &minutes[start..end];
            let scans: Vec<ScanInstance> = window
                .iter()
                .enumerate()
                .map(|(n, o)| {
                    let gap = if n == 0 {
                        1
                    } else {
                        o.minute - window[n - 1].minute
                    };
                    ScanInstance {
                        minute_unix_s: (o.minute * 60) as i64,
                        typical_attenuation_db: o.typical,
                        min_attenuation_db: o.min,
                        seconds_since_last_scan: (gap * 60).min(cap) as u32,
                    }
                })
                .collect();
            let mut by_bucket_s = [0u64; 4];
            let mut weighted_s = 0.0;
            let mut typical_s = 0u64;
            let mut seconds = 0u64;
            for scan in &scans {
                let b = config.bucket(scan.typical_attenuation_db);
                let s = u64::from(scan.seconds_since_last_scan);
                by_bucket_s[b] += s;
                weighted_s += s as f64 * config.bucket_weight(b);
                typical_s += u64::from(scan.typical_attenuation_db) * s;
                seconds += s;
            }
            let score = weighted_s * weight;
            start = end;
            if score < config.minimum_window_score {
                stats.windows_below_minimum += 1;
                continue;
            }
            let last = window[window.len() - 1];
            events.push(ExposureEvent {
                key_id: key.id,
                venue: head.venue,
                start_unix_s: (head.minute * 60) as i64,
                end_unix_s: ((last.minute + 1) * 60) as i64,
                min_attenuation_db: scans
                    .iter()
                    .map(|s| s.min_attenuation_db)
                    .min()
                    .unwrap_or(0),
                typical_attenuation_db: rounded_div(typical_s, seconds),
                minutes_by_bucket: by_bucket_s.map(|s| (s / 60) as u32),
                scan_instances: scans,
                score,
                report_type: plan.report_type,
                infectiousness: plan.infectiousness,
                tx_power_dbm: head.tx,
            });
        }
    }

    /// Step 7: venue hours from the (sorted) events, with co-presence.
    fn venue_hours(
        &self,
        events: &[ExposureEvent],
        matched: &RowSet,
        config: &RiskConfig,
        threads: usize,
    ) -> Vec<VenueHour> {
        // Sorted vectors rather than maps: a run can have 1e5 events.
        // The exposure minutes: (venue, minute) of every scan instance.
        let mut exposure: Vec<(u32, u64)> = events
            .iter()
            .flat_map(|e| {
                e.scan_instances
                    .iter()
                    .map(move |s| (e.venue, (s.minute_unix_s / 60) as u64))
            })
            .collect();
        exposure.sort_unstable();
        exposure.dedup();
        // (venue, hour, key) of every hour each event has a scan instance in.
        let mut hour_keys: Vec<(u32, u64, u64)> = Vec::new();
        for e in events {
            let mut last = None;
            for s in &e.scan_instances {
                let hour = (s.minute_unix_s / 3600) as u64;
                if last != Some(hour) {
                    hour_keys.push((e.venue, hour, e.key_id));
                    last = Some(hour);
                }
            }
        }
        hour_keys.sort_unstable();
        hour_keys.dedup();
        // The venue hours: runs of exposure minutes, (venue, hour, from, to) in `exposure`.
        let mut hours: Vec<(u32, u64, usize, usize)> = Vec::new();
        let mut from = 0;
        while let Some(&(venue, minute)) = exposure.get(from) {
            let hour = minute / 60;
            let to = from
                + exposure[from..]
                    .iter()
                    .take_while(|&&(v, m)| (v, m / 60) == (venue, hour))
                    .count();
            hours.push((venue, hour, from, to));
            from = to;
        }

        // Co-presence per venue hour, the hours spread over the threads: (RPIs, RPI-minutes).
        let per_thread = hours.len().div_ceil(threads.max(1)).max(1);
        let chunks: Vec<&[(u32, u64, usize, usize)]> = hours.chunks(per_thread).collect();
        let co: Vec<(u32, u32)> = parallel_map(&chunks, threads, |chunk| {
            let mut out = Vec::with_capacity(chunk.len());
            let mut cursors = vec![0usize; self.parts.len()];
            let mut starts: Vec<u32> = Vec::new();
            // (RPI, the exposure minutes of the hour one sighting of it was heard in).
            let mut heard: Vec<(Rpi, u64)> = Vec::new();
            for &(venue, hour, from, to) in *chunk {
                let here = &exposure[from..to];
                // The exposure minutes of the hour, one bit each (tested once per stored minute
                // of every sighting in their windows: the inner loop of co-presence).
                let first_minute = hour * 60;
                let exposed = here.iter().fold(0u64, |mask, &(_, minute)| {
                    mask | 1 << (minute - first_minute)
                });
                // The windows that can hold these minutes.
                starts.clear();
                for &(_, minute) in here {
                    let enin = (minute / 10) as u32;
                    starts.extend(enin.saturating_sub(self.max_span_intervals - 1)..=enin);
                }
                starts.sort_unstable();
                starts.dedup();
                heard.clear();
                for &start in &starts {
                    self.window_rows(&mut cursors, venue, start, |row, s| {
                        if matched.contains(row) {
                            return;
                        }
                        let mut minutes = 0u64;
                        for m in s.minutes {
                            let minute = u64::from(start) * 10 + u64::from(m.minute);
                            let offset = minute.wrapping_sub(first_minute);
                            if offset < 60 {
                                minutes |= exposed & (1 << offset);
                            }
                        }
                        if minutes != 0 {
                            heard.push((s.header.rpi, minutes));
                        }
                    });
                }
                // Distinct RPIs, and distinct (RPI, minute) pairs: an RPI heard by several
                // gateways counts once, and each of its minutes once.
                heard.sort_unstable_by_key(|h| h.0);
                let (mut rpis, mut rpi_minutes) = (0u32, 0u32);
                for same in heard.chunk_by(|a, b| a.0 == b.0) {
                    rpis += 1;
                    rpi_minutes += same.iter().fold(0u64, |m, h| m | h.1).count_ones();
                }
                out.push((rpis, rpi_minutes));
            }
            out
        })
        .concat();

        let per_rpi = 1.0 / (config.co_presence_rotation_minutes.max(f64::MIN_POSITIVE) + 1.0);
        let (mut ki, mut ei) = (0, 0);
        hours
            .iter()
            .zip(co)
            .map(|(&(venue, hour, from, to), (co_rpis, co_minutes))| {
                let keys = hour_keys[ki..]
                    .iter()
                    .take_while(|k| (k.0, k.1) == (venue, hour))
                    .count();
                let starting = events[ei..]
                    .iter()
                    .take_while(|e| (e.venue, (e.start_unix_s / 3600) as u64) == (venue, hour))
                    .count();
                let scores = events[ei..ei + starting].iter().map(|e| e.score);
                (ki, ei) = (ki + keys, ei + starting);
                let estimate = f64::from(co_rpis) - f64::from(co_minutes) * per_rpi;
                VenueHour {
                    venue,
                    hour_start_unix_s: (hour * 3600) as i64,
                    exposure_events: starting as u32,
                    infectious_keys: keys as u32,
                    exposure_minutes: (to - from) as u32,
                    max_score: scores.clone().fold(0.0, f64::max),
                    total_score: scores.sum(),
                    co_present_rpis: co_rpis,
                    co_present_rpi_minutes: co_minutes,
                    co_present_visitors: (estimate.round() as u32).clamp(co_rpis.min(1), co_rpis),
                }
            })
            .collect()
    }

    /// Calls `each` with the row ids and sightings of `venue`'s window starting at `start`, in
    /// every part of its day. `cursors` (one per part, from 0) make increasing queries cheap; a
    /// query below the last one restarts the search.
    fn window_rows(
        &self,
        cursors: &mut [usize],
        venue: u32,
        start: u32,
        mut each: impl FnMut(u32, SightingRef<'_>),
    ) {
        let key = window_key(venue, start);
        let day = start / INTERVALS_PER_DAY;
        let Ok(d) = self.days.binary_search_by_key(&day, |d| d.day) else {
            return;
        };
        for p in self.days[d].parts.clone() {
            let (part, at) = (&self.parts[p], &mut cursors[p]);
            // Valid while every window before the cursor is below `key`.
            if *at > 0 && part.windows.get(*at - 1).is_some_and(|w| w.0 >= key) {
                *at = 0;
            }
            *at = gallop(&part.windows, *at, |w| w.0 < key);
            let Some(&(found, from)) = part.windows.get(*at) else {
                continue;
            };
            if found != key {
                continue;
            }
            let to = part
                .windows
                .get(*at + 1)
                .map_or(part.by_window.len(), |w| w.1 as usize);
            for &row in &part.by_window[from as usize..to] {
                each(self.bases[p] + row, part.table.at(row));
            }
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Day parts kept between runs.

/// [`DayPart`]s kept between matching runs, by UTC day, within a memory budget: what lets the
/// authority's daemon build each day's index once and extend it as batches arrive, instead of
/// reading and indexing every sighting again each minute.
///
/// A day is a list of parts. [`append`](Self::append) adds the newly stored sightings of a day
/// as a new (small) part and merges parts so that each is at least twice the size of the next:
/// a day that receives batches every minute has at most ~log₂(rows) parts, and each sighting is
/// re-indexed about that many times over the day. Lookups in a small part cost little (its
/// filter stays in cache).
///
/// Pure bookkeeping: what to load, when the store changed and what to evict are the caller's
/// decisions; [`evict`](Self::evict) offers least-recently-used eviction down to the budget.
#[derive(Debug)]
pub struct DayCache {
    days: BTreeMap<u32, CachedDay>,
    budget_bytes: usize,
    clock: u64,
}

#[derive(Debug)]
struct CachedDay {
    parts: Vec<Arc<DayPart>>,
    /// Batches the day's sightings came from (the caller's count, to check against its store).
    batches: u64,
    last_used: u64,
}

impl CachedDay {
    fn rows(&self) -> u64 {
        self.parts.iter().map(|p| p.len() as u64).sum()
    }

    fn bytes(&self) -> usize {
        self.parts.iter().map(|p| p.memory_bytes()).sum()
    }
}

impl DayCache {
    /// An empty cache that [`evict`](Self::evict) keeps within `budget_bytes`.
    pub fn new(budget_bytes: usize) -> Self {
        Self {
            days: BTreeMap::new(),
            budget_bytes,
            clock: 0,
        }
    }

    /// The memory budget, bytes.
    pub fn budget_bytes(&self) -> usize {
        self.budget_bytes
    }

    /// Whether `day` is cached.
    pub fn contains(&self, day: u32) -> bool {
        self.days.contains_key(&day)
    }

    /// The cached days, ascending.
    pub fn days(&self) -> impl Iterator<Item = u32> + '_ {
        self.days.keys().copied()
    }

    /// Number of days cached.
    pub fn len(&self) -> usize {
        self.days.len()
    }

    /// Whether no day is cached.
    pub fn is_empty(&self) -> bool {
        self.days.is_empty()
    }

    /// `(batches, sightings)` of a cached day.
    pub fn counts(&self, day: u32) -> Option<(u64, u64)> {
        self.days.get(&day).map(|d| (d.batches, d.rows()))
    }

    /// Number of parts a cached day is made of.
    pub fn parts(&self, day: u32) -> Option<usize> {
        self.days.get(&day).map(|d| d.parts.len())
    }

    /// Bytes of memory a cached day holds.
    pub fn day_bytes(&self, day: u32) -> Option<usize> {
        self.days.get(&day).map(CachedDay::bytes)
    }

    /// Bytes of memory all cached days hold.
    pub fn memory_bytes(&self) -> usize {
        self.days.values().map(CachedDay::bytes).sum()
    }

    /// Caches `part` as all of its day's sightings (from `batches` batches), replacing what was
    /// cached for the day.
    pub fn insert(&mut self, part: DayPart, batches: u64) {
        self.clock += 1;
        self.days.insert(
            part.day,
            CachedDay {
                parts: vec![Arc::new(part)],
                batches,
                last_used: self.clock,
            },
        );
    }

    /// Adds `table`, sightings of `batches` more batches of a cached `day`, to it; returns
    /// false (and does nothing) when the day is not cached: it will be read whole when needed.
    pub fn append(
        &mut self,
        day: u32,
        table: SightingTable,
        batches: u64,
    ) -> Result<bool, IndexError> {
        let Some(cached) = self.days.get_mut(&day) else {
            return Ok(false);
        };
        cached.batches += batches;
        if table.is_empty() {
            return Ok(true);
        }
        cached.parts.push(Arc::new(DayPart::build(day, table)?));
        // Keep part sizes at least halving: merge the newest part into the one before it while
        // it is half as large or more.
        while let [.., before, last] = cached.parts.as_slice() {
            if last.len() * 2 < before.len() {
                break;
            }
            let merged = DayPart::merge(&[before, last])?;
            cached.parts.truncate(cached.parts.len() - 2);
            cached.parts.push(Arc::new(merged));
        }
        Ok(true)
    }

    /// Forgets `day`; returns whether it was cached.
    pub fn remove(&mut self, day: u32) -> bool {
        self.days.remove(&day).is_some()
    }

    /// Keeps only the days for which `keep(day)` is true.
    pub fn retain(&mut self, mut keep: impl FnMut(u32) -> bool) {
        self.days.retain(|&day, _| keep(day));
    }

    /// Forgets every day.
    pub fn clear(&mut self) {
        self.days.clear();
    }

    /// An index over the cached ones among `days` (marked as just used).
    pub fn index(
        &mut self,
        days: impl IntoIterator<Item = u32>,
    ) -> Result<SightingIndex, IndexError> {
        self.clock += 1;
        let mut parts = Vec::new();
        for day in days {
            if let Some(cached) = self.days.get_mut(&day) {
                cached.last_used = self.clock;
                parts.extend(cached.parts.iter().cloned());
            }
        }
        SightingIndex::from_parts(parts)
    }

    /// Evicts the least recently used days, never one in `keep`, until the cache holds at most
    /// `budget_bytes − reserve_bytes` (or only kept days); returns the days evicted.
    pub fn evict(
        &mut self,
        keep: &std::collections::BTreeSet<u32>,
        reserve_bytes: usize,
    ) -> Vec<u32> {
        let limit = self.budget_bytes.saturating_sub(reserve_bytes);
        let mut bytes = self.memory_bytes();
        let mut candidates: Vec<(u64, u32, usize)> = self
            .days
            .iter()
            .filter(|(day, _)| !keep.contains(day))
            .map(|(&day, d)| (d.last_used, day, d.bytes()))
            .collect();
        candidates.sort_unstable();
        let mut evicted = Vec::new();
        for (_, day, size) in candidates {
            if bytes <= limit {
                break;
            }
            self.days.remove(&day);
            bytes -= size;
            evicted.push(day);
        }
        evicted
    }
}

/// A key to derive and look up, with how it is scored.
struct KeyPlan {
    /// Index into the caller's keys.
    key: usize,
    first: u32,
    len: u32,
    report_type: ReportType,
    infectiousness: Infectiousness,
}

/// A contiguous run of one key's intervals in a part's probe list.
struct Piece {
    /// Index into the chunk's plans.
    plan: usize,
    /// Offset of the run in the derived-RPI buffer.
    from: usize,
    /// Offset of the run in the probe list.
    probe_start: usize,
    /// Number of RPIs in the run.
    len: usize,
    /// Interval of the run's first RPI.
    first_interval: u32,
}

/// A derived RPI found in a sighting.
#[derive(Clone, Copy)]
struct Hit {
    plan: u32,
    row: u32,
    interval: u32,
}

/// One minute of one matched sighting (later: of one key at one venue).
#[derive(Clone, Copy)]
struct Obs {
    venue: u32,
    interval: u32,
    /// Minutes since the Unix epoch.
    minute: u64,
    reports: u32,
    typical: u8,
    min: u8,
    tx: i8,
}

impl Obs {
    /// A total order (venue, interval, minute first), so unstable sorts give one result
    /// whatever the order the sightings came in.
    fn order(&self) -> (u32, u32, u64, (u32, u8, u8, i8)) {
        (
            self.venue,
            self.interval,
            self.minute,
            (self.reports, self.typical, self.min, self.tx),
        )
    }
}

/// Buffers [`SightingIndex::key_events`] reuses from key to key.
#[derive(Default)]
struct Scratch {
    obs: Vec<Obs>,
    kept: Vec<Obs>,
    minutes: Vec<Obs>,
}

struct ChunkOut {
    events: Vec<ExposureEvent>,
    hit_rows: Vec<u32>,
    stats: MatchStats,
}

/// The first index at or after `from` where `before` is false, `before` being true on a prefix
/// of `slice` that reaches at least `from`: exponential, then binary search, so cheap when the
/// answer is near `from` (a forward cursor).
fn gallop<T>(slice: &[T], from: usize, before: impl Fn(&T) -> bool) -> usize {
    let (mut lo, mut hi, mut step) = (from, from, 1);
    while hi < slice.len() && before(&slice[hi]) {
        lo = hi + 1;
        hi += step;
        step *= 2;
    }
    let hi = hi.min(slice.len());
    lo + slice[lo..hi].partition_point(before)
}

/// A set of sighting rows (those any key matched), one bit each.
struct RowSet(Vec<u64>);

impl RowSet {
    fn new(rows: usize) -> Self {
        Self(vec![0; rows.div_ceil(64)])
    }

    fn insert(&mut self, row: u32) {
        if let Some(word) = self.0.get_mut(row as usize / 64) {
            *word |= 1 << (row % 64);
        }
    }

    fn contains(&self, row: u32) -> bool {
        self.0
            .get(row as usize / 64)
            .is_some_and(|word| word & (1 << (row % 64)) != 0)
    }
}

/// The (venue, window start) ordering key.
fn window_key(venue: u32, start: u32) -> u64 {
    (u64::from(venue) << 32) | u64::from(start)
}

/// `num / den` rounded half up, as an attenuation (`den` 0 gives 0).
fn rounded_div(num: u64, den: u64) -> u8 {
    if den == 0 {
        return 0;
    }
    ((num + den / 2) / den).min(255) as u8
}

/// `f` over `items` on up to `threads` scoped threads (a shared counter hands out items), in
/// item order.
fn parallel_map<T: Sync, R: Send>(
    items: &[T],
    threads: usize,
    f: impl Fn(&T) -> R + Sync,
) -> Vec<R> {
    if threads <= 1 || items.len() <= 1 {
        return items.iter().map(f).collect();
    }
    let next = AtomicUsize::new(0);
    let mut done: Vec<(usize, R)> = std::thread::scope(|scope| {
        let workers: Vec<_> = (0..threads.min(items.len()))
            .map(|_| {
                scope.spawn(|| {
                    let mut out = Vec::new();
                    loop {
                        let i = next.fetch_add(1, Ordering::Relaxed);
                        let Some(item) = items.get(i) else { break };
                        out.push((i, f(item)));
                    }
                    out
                })
            })
            .collect();
        workers
            .into_iter()
            .flat_map(|w| {
                w.join()
                    .unwrap_or_else(|panic| std::panic::resume_unwind(panic))
            })
            .collect()
    });
    done.sort_unstable_by_key(|(i, _)| *i);
    done.into_iter().map(|(_, r)| r).collect()
}

/// [`parallel_map`] over owned items, each handed to `f` by value, in item order.
fn parallel_map_owned<T: Send, R: Send>(
    items: Vec<T>,
    threads: usize,
    f: impl Fn(T) -> R + Sync,
) -> Vec<R> {
    let slots: Vec<Mutex<Option<T>>> = items.into_iter().map(|t| Mutex::new(Some(t))).collect();
    // `parallel_map` visits each slot once, so every `take` finds its item.
    parallel_map(&slots, threads, |slot| {
        slot.lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .take()
            .map(&f)
    })
    .into_iter()
    .flatten()
    .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The defaults are the documented ones, valid, and the ENX infectiousness map decodes to
    /// the same table (2 bits per day from −14, least significant first; 01 standard, 10 high).
    #[test]
    fn defaults_are_enx_and_valid() {
        let config = RiskConfig::default();
        assert!(config.validate().is_empty(), "{:?}", config.validate());
        let enx: u64 = 0x0401_555A_A940_0000;
        for (i, level) in config.infectiousness_by_days_since_onset.iter().enumerate() {
            let expected = match (enx >> (2 * i)) & 0b11 {
                0 => Infectiousness::None,
                1 => Infectiousness::Standard,
                _ => Infectiousness::High,
            };
            assert_eq!(*level, expected, "day {}", i as i32 - 14);
        }
        // The 30th entry is "no onset given": standard.
        assert_eq!((enx >> 58) & 0b11, 1);
        assert_eq!(config.default_infectiousness, Infectiousness::Standard);
    }

    /// Bucket edges are inclusive upper bounds.
    #[test]
    fn buckets_are_inclusive_upper_bounds() {
        let config = RiskConfig::default();
        let buckets: Vec<usize> = [0, 55, 56, 63, 64, 73, 74, 255]
            .into_iter()
            .map(|a| config.bucket(a))
            .collect();
        assert_eq!(buckets, [0, 0, 1, 1, 2, 2, 3, 3]);
    }

    /// Days since onset map through the table; outside −14..=14 is none; missing is the default.
    #[test]
    fn infectiousness_from_days_since_onset() {
        let config = RiskConfig::default();
        let key = |days: Option<i32>| DiagnosisKey {
            tek: crate::crypto::Tek::from_bytes([1; 16]),
            transmission_risk_level: None,
            rolling_start: Enin(0),
            rolling_period: crate::crypto::RollingPeriod::DAY,
            report_type: None,
            days_since_onset_of_symptoms: days,
        };
        let levels: Vec<Infectiousness> = [
            Some(-15),
            Some(-14),
            Some(-3),
            Some(0),
            Some(10),
            Some(11),
            Some(i32::MAX),
            Some(i32::MIN),
            None,
        ]
        .into_iter()
        .map(|d| config.infectiousness(&key(d)))
        .collect();
        use Infectiousness::{High, None as N, Standard};
        assert_eq!(levels, [N, N, Standard, High, Standard, N, N, N, Standard]);
    }

    /// The configuration deserializes with every field optional, rejects unknown fields and
    /// unweighted default report types, and validation lists every problem.
    #[test]
    fn config_serde_and_validation() {
        let parsed: RiskConfig = serde_json::from_str("{}").expect("empty config");
        assert_eq!(parsed, RiskConfig::default());
        let parsed: RiskConfig = serde_json::from_str(
            r#"{"default_report_type": "SELF_REPORT", "report_type_weights":
                {"confirmed_test": 1, "confirmed_clinical_diagnosis": 1, "self_report": 0.5,
                 "recursive": 0}}"#,
        )
        .expect("partial config");
        assert_eq!(parsed.default_report_type, ReportType::SelfReport);
        assert_eq!(parsed.report_type_weights.self_report, 0.5);
        assert!(serde_json::from_str::<RiskConfig>(r#"{"tolerance": 3}"#).is_err());
        assert!(
            serde_json::from_str::<RiskConfig>(r#"{"default_report_type": "REVOKED"}"#).is_err()
        );
        let json = serde_json::to_string(&RiskConfig::default()).expect("serialize");
        let back: RiskConfig = serde_json::from_str(&json).expect("round trip");
        assert_eq!(back, RiskConfig::default());

        let mut bad = RiskConfig::default();
        bad.attenuation_thresholds_db[1] = 80;
        bad.attenuation_weights[3] = 3.0;
        bad.max_window_minutes = 0;
        bad.minimum_window_score = f64::NAN;
        bad.default_report_type = ReportType::Revoked;
        let keys: Vec<&str> = bad.validate().iter().map(|p| p.key).collect();
        assert_eq!(
            keys,
            [
                "max_window_minutes",
                "attenuation_thresholds_db",
                "attenuation_weights",
                "default_report_type",
                "minimum_window_score",
            ]
        );
    }

    /// `parallel_map` keeps item order whatever the thread count.
    #[test]
    fn parallel_map_keeps_order() {
        let items: Vec<u32> = (0..100).collect();
        for threads in [0, 1, 2, 7] {
            let out = parallel_map(&items, threads, |x| x * 2);
            assert_eq!(out, (0..100).map(|x| x * 2).collect::<Vec<_>>());
        }
    }

    /// Galloping from a cursor finds the same index as a binary search from the start.
    #[test]
    fn gallop_equals_partition_point() {
        let values: Vec<u32> = (0..1000).map(|x| x * 3).collect();
        for target in [0, 1, 3, 500, 2997, 2998, 5000] {
            let expected = values.partition_point(|&v| v < target);
            for from in [0, expected / 2, expected] {
                assert_eq!(gallop(&values, from, |&v| v < target), expected);
            }
        }
        assert_eq!(gallop(&[] as &[u32], 0, |_| true), 0);
    }

    /// Rounded division rounds half up and saturates at 255.
    #[test]
    fn rounded_division() {
        assert_eq!(rounded_div(23_400, 360), 65);
        assert_eq!(rounded_div(5, 2), 3);
        assert_eq!(rounded_div(1_000_000, 1), 255);
        assert_eq!(rounded_div(7, 0), 0);
    }

    /// A day's sightings as given, then as rows of a table: the same values, 40 bytes a row.
    #[test]
    fn sighting_table_round_trips() {
        let (_, sightings) = small_scenario();
        let table: SightingTable = sightings.iter().cloned().collect();
        assert_eq!(table.len(), sightings.len());
        let back: Vec<VenueSighting> = table.iter().map(|s| s.to_sighting()).collect();
        assert_eq!(back, sightings);
        assert_eq!(
            table.get(3).map(|s| s.to_sighting()),
            Some(sightings[3].clone())
        );
        assert!(table.get(sightings.len()).is_none());
        assert_eq!(std::mem::size_of::<Row>(), 40);
        assert_eq!(std::mem::size_of::<MinuteRssi>(), 8);
        let mut twice = table.clone();
        twice.extend_from(&table);
        assert_eq!(twice.len(), 2 * table.len());
        assert_eq!(
            twice.get(table.len()).map(|s| s.to_sighting()),
            Some(sightings[0].clone())
        );
    }

    /// A part only takes sightings of its own day.
    #[test]
    fn day_part_refuses_other_days() {
        let (_, sightings) = small_scenario();
        let day = sightings[0].window_start.0 / INTERVALS_PER_DAY;
        let table: SightingTable = sightings.iter().cloned().collect();
        let err = DayPart::build(day, table).expect_err("several days");
        assert!(
            matches!(err, IndexError::OtherDay { day: d, .. } if d == day),
            "{err}"
        );
    }

    /// Splitting a day into several parts, in any order, gives the same report (byte for
    /// byte) and looks up the same intervals as one part per day.
    #[test]
    fn splitting_days_into_parts_changes_nothing() {
        let (keys, sightings) = small_scenario();
        let config = RiskConfig::default();
        let reference = SightingIndex::build(&sightings, 1).match_keys(&keys, &config, 2);
        assert!(reference.events.len() > 20, "{}", reference.events.len());
        assert!(reference.venue_hours.iter().any(|h| h.co_present_rpis > 0));
        let mut by_day: BTreeMap<u32, Vec<VenueSighting>> = BTreeMap::new();
        for s in &sightings {
            by_day
                .entry(s.window_start.0 / INTERVALS_PER_DAY)
                .or_default()
                .push(s.clone());
        }
        let mut parts = Vec::new();
        for (day, rows) in by_day {
            let (a, rest) = rows.split_at(rows.len() / 2);
            let (b, c) = rest.split_at(rest.len() / 3);
            for chunk in [c, a, b] {
                let table = chunk.iter().cloned().collect();
                parts.push(Arc::new(DayPart::build(day, table).expect("one day")));
            }
        }
        parts.reverse();
        let split = SightingIndex::from_parts(parts).expect("index");
        assert!(split.parts() > split.days());
        let report = split.match_keys(&keys, &config, 2);
        assert_eq!(report.stats, reference.stats);
        assert_eq!(
            serde_json::to_string(&report).expect("json"),
            serde_json::to_string(&reference).expect("json")
        );
    }

    /// Appending to a cached day adds parts whose sizes at least halve (merging the newer ones)
    /// and counts batches and sightings; an index of the cache matches like one built at once.
    #[test]
    fn day_cache_appends_merges_and_matches() {
        let (keys, sightings) = small_scenario();
        let day = sightings[0].window_start.0 / INTERVALS_PER_DAY;
        let rows: Vec<VenueSighting> = sightings
            .iter()
            .filter(|s| s.window_start.0 / INTERVALS_PER_DAY == day)
            .cloned()
            .collect();
        assert!(rows.len() > 400, "{}", rows.len());
        let table = |range: std::ops::Range<usize>| rows[range].iter().cloned().collect();
        let mut cache = DayCache::new(1 << 30);
        assert_eq!(cache.append(day, table(0..10), 1), Ok(false), "not cached");
        cache.insert(DayPart::build(day, table(0..200)).expect("part"), 4);
        assert_eq!(cache.append(day, table(200..300), 2), Ok(true));
        assert_eq!(cache.parts(day), Some(1), "100 ≥ 200 / 2: merged");
        assert_eq!(cache.append(day, table(300..340), 1), Ok(true));
        assert_eq!(cache.parts(day), Some(2), "40 < 300 / 2: kept apart");
        assert_eq!(cache.append(day, table(340..370), 1), Ok(true));
        assert_eq!(cache.parts(day), Some(2), "30 ≥ 40 / 2: merged into 70");
        assert_eq!(cache.append(day, table(370..rows.len()), 3), Ok(true));
        assert_eq!(cache.counts(day), Some((11, rows.len() as u64)));
        let config = RiskConfig::default();
        let cached = cache
            .index([day])
            .expect("index")
            .match_keys(&keys, &config, 1);
        let direct = SightingIndex::build(&rows, 1).match_keys(&keys, &config, 1);
        assert!(!direct.events.is_empty());
        assert_eq!(
            serde_json::to_string(&cached).expect("json"),
            serde_json::to_string(&direct).expect("json")
        );
    }

    /// Eviction drops the least recently used days first, never a kept one, down to the budget
    /// less the room asked for.
    #[test]
    fn day_cache_evicts_least_recently_used() {
        let (_, sightings) = small_scenario();
        let mut by_day: BTreeMap<u32, SightingTable> = BTreeMap::new();
        for s in &sightings {
            by_day
                .entry(s.window_start.0 / INTERVALS_PER_DAY)
                .or_default()
                .push_sighting(s);
        }
        let days: Vec<u32> = by_day.keys().copied().collect();
        assert_eq!(days.len(), 4);
        let mut cache = DayCache::new(usize::MAX);
        for (&day, table) in &by_day {
            cache.insert(DayPart::build(day, table.clone()).expect("part"), 1);
        }
        let _ = cache.index([days[0]]);
        let mut cache = DayCache {
            budget_bytes: cache.memory_bytes() - 1,
            ..cache
        };
        // Over budget by a byte: the least recently used day that is not kept goes.
        let keep = std::collections::BTreeSet::from([days[1]]);
        assert_eq!(cache.evict(&keep, 0), vec![days[2]]);
        // Room for everything asked: the others go, least recently used first.
        assert_eq!(cache.evict(&keep, usize::MAX), vec![days[3], days[0]]);
        assert_eq!(cache.days().collect::<Vec<_>>(), vec![days[1]]);
    }

    /// A day observed only in part is looked up piece by piece (long pieces in place, short
    /// ones gathered); observed around the clock, in one buffer. Both find the same.
    #[test]
    fn partial_and_whole_day_lookups_agree() {
        let (keys, sightings) = small_scenario();
        let day = sightings[0].window_start.0 / INTERVALS_PER_DAY;
        let mut partial: Vec<VenueSighting> = sightings
            .into_iter()
            .filter(|s| (day * 144 + 40..day * 144 + 120).contains(&s.window_start.0))
            .collect();
        let config = RiskConfig::default();
        let piecewise = SightingIndex::build(&partial, 1).match_keys(&keys, &config, 1);
        // Two sightings at a venue no key was heard at make the day observed around the clock.
        for window in [day * 144, day * 144 + 143] {
            let mut far = partial[0].clone();
            (far.venue, far.window_start, far.rpi) = (999, Enin(window), Rpi::from_bytes([1; 16]));
            partial.push(far);
        }
        let whole = SightingIndex::build(&partial, 1).match_keys(&keys, &config, 1);
        assert!(whole.stats.probes > piecewise.stats.probes);
        assert!(piecewise.events.len() > 10, "{}", piecewise.events.len());
        assert_eq!(whole.events, piecewise.events);
        assert_eq!(whole.venue_hours, piecewise.venue_hours);
        assert_eq!(
            whole.stats.matched_sightings,
            piecewise.stats.matched_sightings
        );
    }

    /// Keys over three days and a fourth: sightings of some of their RPIs (real AEMs, some
    /// heard hours off their interval) among filler RPIs, at a few venues.
    fn small_scenario() -> (Vec<MatchKey>, Vec<VenueSighting>) {
        use crate::crypto::{Metadata, RollingPeriod, Tek};
        const DAY: u32 = 20_244;
        let minutes = |seed: u32, n: u32| -> Vec<MinuteRssi> {
            (0..n)
                .map(|m| MinuteRssi {
                    minute: ((seed + m) % 10) as u8,
                    count: 1 + (seed + m) % 7,
                    min: -90,
                    mean: -60 - ((seed * 7 + m) % 30) as i8,
                    max: -55,
                })
                .map(|m| (m.minute, m))
                .collect::<BTreeMap<u8, MinuteRssi>>()
                .into_values()
                .collect()
        };
        let mut keys = Vec::new();
        let mut sightings = Vec::new();
        for k in 0..40u32 {
            let mut bytes = [0x5A; 16];
            bytes[..4].copy_from_slice(&k.to_le_bytes());
            let tek = Tek::from_bytes(bytes);
            let start = (DAY + k % 3) * 144 + if k % 10 == 9 { 70 } else { 0 };
            keys.push(MatchKey {
                id: u64::from(k) + 1,
                key: DiagnosisKey {
                    tek,
                    transmission_risk_level: None,
                    rolling_start: Enin(start),
                    rolling_period: RollingPeriod::DAY,
                    report_type: None,
                    days_since_onset_of_symptoms: None,
                },
            });
            let (rpik, aemk) = tek.keys();
            let cipher = rpik.cipher();
            for i in (k % 5..144).step_by(9) {
                let rpi = cipher.rpi(Enin(start + i));
                // Mostly in its own window, sometimes 3 or 14 intervals later.
                let heard = start + i + [0, 0, 0, 3, 14][(i % 5) as usize];
                sightings.push(VenueSighting {
                    venue: (k + i) % 4,
                    window_start: Enin(heard),
                    window_minutes: 10,
                    rpi,
                    aem: aemk.encrypt(&rpi, Metadata::v1_0(-8).to_bytes()),
                    rssi_calibration_db: (i % 3) as i32,
                    minutes: minutes(k + i, 1 + i % 10),
                });
            }
        }
        for f in 0..3000u32 {
            let mut bytes = [0x77; 16];
            bytes[..4].copy_from_slice(&f.to_le_bytes());
            let tek = Tek::from_bytes(bytes);
            let window = DAY * 144 + (f * 37) % (4 * 144);
            let rpi = tek.rpik().cipher().rpi(Enin(window));
            sightings.push(VenueSighting {
                venue: f % 4,
                window_start: Enin(window),
                window_minutes: 10,
                rpi,
                aem: Aem::from_bytes(f.to_le_bytes()),
                rssi_calibration_db: 0,
                minutes: minutes(f, 1 + f % 10),
            });
        }
        sightings.sort_by_key(|s| (s.window_start, s.venue));
        (keys, sightings)
    }
}
