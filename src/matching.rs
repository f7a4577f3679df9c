//! Exposure matching at the authority: diagnosis keys of confirmed cases against what gateways
//! sealed per window, as a phone's Exposure Notification framework does it in "ExposureWindow"
//! mode (GAEN v2), per venue instead of per phone.
//!
//! Owns the matching inputs ([`VenueSighting`], [`MatchKey`]), the risk model and its defaults
//! ([`RiskConfig`]), the index over stored sightings ([`SightingIndex`]) and the results
//! ([`ExposureEvent`], [`VenueHour`], [`MatchStats`] in a [`MatchReport`]). Pure: values in,
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
//!    key is only looked up in the parts its intervals ± 2 h can reach (its day, and the first
//!    or last 12 intervals in the neighbouring days). Keys are processed in rolling-start order,
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
//! `benches/matching.rs` (100 k keys, 10 M sightings over 2 days, 1 % of the derived RPIs
//! stored; figures in docs/performance.md): the join runs at the index's speed, ~1 M keys/s
//! on 2 threads (~160 M derived-RPI lookups/s); each matched sighting then costs ~1–1.5 µs
//! (decrypt, windows, venue hour, co-presence). 3 M keys against 1e8 sightings extrapolate to
//! ~3 s of join plus the per-match work: 8–10 s at that (heavy) 1 % match rate. Building the
//! index is the slow part (sorting; ~2 s per 10 M sightings on 2 threads), so it is built once
//! per set of sightings (a day part can be built when its day's batches are in), not per run.
//!
//! Privacy: no RPI, key or AEM appears in any output; events name a key by its store row id.
//! Determinism: the same inputs give the same report, byte for byte, whatever the thread count.

use crate::aggregate::MinuteRssi;
use crate::crypto::{Aem, Enin, INTERVALS_PER_DAY, Rpi};
use crate::export::{DiagnosisKey, ReportType};
use crate::rpi_index::RpiIndex;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::fmt;
use std::sync::atomic::{AtomicUsize, Ordering};

/// Days-since-onset values the infectiousness map covers: −14 ..= 14 (as in
/// `DiagnosisKeysDataMapping`); other values map to [`Infectiousness::None`].
pub const ONSET_DAYS: usize = 29;
const FIRST_ONSET_DAY: i32 = -14;
/// Keys derived into one probe buffer: 256 × 144 RPIs = 590 KB, inside a core's L2 (measured
/// in `benches/rpi_lookup.rs`).
const BATCH_KEYS: usize = 256;

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
// The sighting index.

/// The stored sightings indexed for matching: per UTC day of their windows, an [`RpiIndex`]
/// over their RPIs and their rows ordered by (venue, window start) for the co-presence counts.
/// Borrows the sightings, so it cannot be used with others. Build it once per set of stored
/// sightings (e.g. per day as that day's batches complete) and match any number of key sets.
pub struct SightingIndex<'a> {
    sightings: &'a [VenueSighting],
    parts: Vec<Part>,
    /// Most intervals one sighting's minutes span (1 for 10-minute windows).
    max_span_intervals: u32,
}

struct Part {
    day: u32,
    /// Observation intervals of the part's minutes, inclusive.
    obs_lo: u32,
    obs_hi: u32,
    /// Sighting rows, ascending; the index's row ids are positions in this list.
    rows: Vec<u32>,
    index: RpiIndex,
    /// The same rows ordered by (venue, window start, row).
    by_window: Vec<u32>,
    /// One entry per distinct (venue, window start): its key `venue << 32 | start` and where
    /// its rows begin in `by_window`, by key (searched without touching the sightings).
    windows: Vec<(u64, u32)>,
}

impl fmt::Debug for SightingIndex<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SightingIndex")
            .field("sightings", &self.sightings.len())
            .field("parts", &self.parts.len())
            .finish()
    }
}

/// Intervals a sighting's minutes reach past its window start, plus one.
fn span_intervals(s: &VenueSighting) -> u32 {
    let last_minute = s.minutes.iter().map(|m| u32::from(m.minute) + 1).max();
    last_minute
        .unwrap_or(0)
        .max(s.window_minutes)
        .div_ceil(10)
        .max(1)
}

impl<'a> SightingIndex<'a> {
    /// Indexes `sightings`, building the day parts on up to `threads` threads.
    ///
    /// # Panics
    /// With 2^32 − 1 sightings or more (row ids are `u32`; that many would take over 250 GB).
    pub fn build(sightings: &'a [VenueSighting], threads: usize) -> Self {
        assert!(
            sightings.len() < u32::MAX as usize,
            "at most 2^32 - 1 sightings per index (row ids are u32)"
        );
        let mut by_day: BTreeMap<u32, Vec<u32>> = BTreeMap::new();
        // Sightings usually come grouped by window: collect runs of one day, then file them.
        let mut run: (Option<u32>, Vec<u32>) = (None, Vec::new());
        for (row, s) in sightings.iter().enumerate() {
            let day = s.window_start.0 / INTERVALS_PER_DAY;
            if run.0 != Some(day) {
                if let Some(d) = run.0 {
                    by_day.entry(d).or_default().append(&mut run.1);
                }
                run.0 = Some(day);
            }
            run.1.push(row as u32);
        }
        if let Some(d) = run.0 {
            by_day.entry(d).or_default().append(&mut run.1);
        }
        let days: Vec<(u32, Vec<u32>)> = by_day.into_iter().collect();
        let parts = parallel_map(&days, threads, |(day, rows)| {
            Part::build(sightings, *day, rows.clone())
        });
        let max_span_intervals = sightings.iter().map(span_intervals).max().unwrap_or(1);
        Self {
            sightings,
            parts,
            max_span_intervals,
        }
    }

    /// The indexed sightings.
    pub fn sightings(&self) -> &'a [VenueSighting] {
        self.sightings
    }

    /// Number of index parts (UTC days with sightings).
    pub fn parts(&self) -> usize {
        self.parts.len()
    }

    /// Bytes of memory the index holds (not counting the sightings).
    pub fn memory_bytes(&self) -> usize {
        self.parts
            .iter()
            .map(|p| {
                p.index.memory_bytes()
                    + (p.rows.len() + p.by_window.len()) * 4
                    + p.windows.len() * std::mem::size_of::<(u64, u32)>()
            })
            .sum()
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
        let mut matched = RowSet::new(self.sightings.len());
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
            for part in &self.parts {
                // Which of each key's intervals can have been observed in this part's minutes.
                pieces.clear();
                let mut total = 0usize;
                for (k, plan) in batch.iter().enumerate() {
                    let first = u64::from(plan.first);
                    let last = first + u64::from(plan.len) - 1;
                    let lo = first.max(u64::from(part.obs_lo).saturating_sub(u64::from(tol)));
                    let hi = last.min(u64::from(part.obs_hi) + u64::from(tol));
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
                // Every key wholly relevant (the usual case): probe the buffer in place.
                let probes: &[Rpi] = if total == rpis.len() {
                    &rpis
                } else {
                    probe_buf.clear();
                    for piece in &pieces {
                        probe_buf.extend_from_slice(&rpis[piece.from..piece.from + piece.len]);
                    }
                    &probe_buf
                };
                part.index.lookup_batch(probes, |pos, rows| {
                    let at = pieces.partition_point(|p| p.probe_start <= pos) - 1;
                    let piece = &pieces[at];
                    let interval = piece.first_interval + (pos - piece.probe_start) as u32;
                    for &r in rows {
                        hits.push(Hit {
                            plan: piece.plan as u32,
                            row: part.rows[r as usize],
                            interval,
                        });
                    }
                });
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
            let s = &self.sightings[hit.row as usize];
            let in_tolerance = |m: &MinuteRssi| {
                let observed = i64::from(s.window_start.0) + i64::from(m.minute / 10);
                (observed - i64::from(hit.interval)).abs() <= tol
            };
            if !s.minutes.iter().any(in_tolerance) {
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
            for m in s.minutes.iter().filter(|m| in_tolerance(m)) {
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
            let mut heard: Vec<(Rpi, u64)> = Vec::new();
            for &(venue, _, from, to) in *chunk {
                let here = &exposure[from..to];
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
                    self.window_rows(&mut cursors, venue, start, |row| {
                        if matched.contains(row) {
                            return;
                        }
                        let s = &self.sightings[row as usize];
                        for m in &s.minutes {
                            let minute = u64::from(start) * 10 + u64::from(m.minute);
                            if here.binary_search(&(venue, minute)).is_ok() {
                                heard.push((s.rpi, minute));
                            }
                        }
                    });
                }
                heard.sort_unstable();
                heard.dedup();
                let rpis = heard.chunk_by(|a, b| a.0 == b.0).count();
                out.push((rpis as u32, heard.len() as u32));
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

    /// Calls `each` with the rows of `venue`'s window starting at `start`. `cursors` (one per
    /// part, from 0) make increasing queries cheap; a query below the last one restarts the
    /// search.
    fn window_rows(
        &self,
        cursors: &mut [usize],
        venue: u32,
        start: u32,
        mut each: impl FnMut(u32),
    ) {
        let key = window_key(venue, start);
        let day = start / INTERVALS_PER_DAY;
        for (part, at) in self.parts.iter().zip(cursors) {
            if part.day != day {
                continue;
            }
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
                each(row);
            }
        }
    }
}

impl Part {
    fn build(sightings: &[VenueSighting], day: u32, rows: Vec<u32>) -> Part {
        let rpis: Vec<Rpi> = rows.iter().map(|&r| sightings[r as usize].rpi).collect();
        let index = RpiIndex::build(&rpis)
            .expect("a part has fewer rows than the whole index, checked below u32::MAX in build");
        let (mut obs_lo, mut obs_hi) = (u32::MAX, 0);
        let mut keyed: Vec<(u64, u32)> = Vec::with_capacity(rows.len());
        for &row in &rows {
            let s = &sightings[row as usize];
            obs_lo = obs_lo.min(s.window_start.0);
            obs_hi = obs_hi.max(s.window_start.0.saturating_add(span_intervals(s) - 1));
            keyed.push((window_key(s.venue, s.window_start.0), row));
        }
        keyed.sort_unstable();
        let mut windows: Vec<(u64, u32)> = Vec::new();
        for (i, &(key, _)) in keyed.iter().enumerate() {
            if windows.last().is_none_or(|w| w.0 != key) {
                windows.push((key, i as u32));
            }
        }
        Part {
            day,
            obs_lo,
            obs_hi,
            by_window: keyed.into_iter().map(|(_, row)| row).collect(),
            windows,
            rows,
            index,
        }
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
}
