//! A simulated city day: phones moving between venues, each venue seen by one gateway. Owns
//! the simulation model (population, arrivals, dwell, key schedules, address rotation, radio
//! path loss), the advert stream of each venue and the ground truth that tests and the demo
//! compare the authority's findings with.
//!
//! Pure and deterministic: a [`SimConfig`] (with its seed) in, [`Advert`] values and a
//! [`GroundTruth`] out; no clock, no I/O, no tokio. Pacing the stream in wall time, writing
//! the ground truth to a file and feeding the gateway's channel are
//! [`crate::gateway::sim`]'s job; the crypto is [`crate::crypto`]'s.
//!
//! # Model
//!
//! - **Population.** `phones` phones; each is a GAEN phone or (with `bluetrace_share`) a
//!   BlueTrace phone, is later diagnosed with `infected_share`, and is one of the
//!   `phone_models` (calibrated TX power for the metadata, and how far its real radiated power
//!   is off that calibration).
//! - **Arrivals.** Per venue, a Poisson process: `arrivals_per_hour` is the peak rate; with
//!   `day_curve` it is shaped by the UTC hour (0.15 of the peak at night, full at the
//!   12:30 and 18:30 peaks), by thinning. Dwell is lognormal (shape σ = 0.6) with mean
//!   `mean_dwell_minutes`, clamped to 2 min..3 h; visits are clipped to the simulated window.
//!   Arrival and departure are whole seconds.
//! - **Who arrives.** All venues' arrivals are merged in time order and each is given a phone
//!   drawn uniformly from the phones that are free: not in a visit, and at least 5 minutes
//!   (travel) after their last departure. So a phone is never at two venues at once, and the
//!   same phone often visits several venues in a day. An arrival that finds no free phone
//!   (population too small for the rates) is dropped and counted in
//!   [`GroundTruth::arrivals_without_free_phone`].
//! - **Keys (GAEN).** One TEK per phone per UTC day (rolling start = the day's first ENIN,
//!   period 144), drawn from a ChaCha8 RNG seeded from (seed, phone, day).
//! - **Rotation.** The RPI and the random address (resolvable-private style: top bits `01`)
//!   change together, once per interval, at the interval boundary plus a per-(phone,
//!   interval) random delay in `0..rotation_jitter_s` (default 60 s). The identity broadcast
//!   from one rotation to the next is the RPI of the interval in which the rotation happened,
//!   so an advert at time t carries the RPI of ENIN(t), or of ENIN(t) − 1 during the first
//!   `rotation_jitter_s` of an interval. Why: phones rotate on a timer that does not fire
//!   exactly at the boundary (the spec lets address rotation drift), and a lagging RPI is what
//!   the matching's ±2 h tolerance is for; the delay is bounded so that one RPI is never
//!   broadcast for longer than 10 min + jitter. BlueTrace phones rotate their address on the
//!   same schedule, with 3 new random ASCII characters in their manufacturer data.
//! - **What the gateway hears.** A scanning gateway catches a fraction of a phone's ~250 ms
//!   adverts: the first one within a second of arrival, then one every `advert_interval_ms`
//!   on average (uniformly 0.5..1.5 × the interval), until departure.
//! - **BlueTrace TempIDs** (with `bluetrace_reads`, as a gateway with
//!   `bluetrace.collect_tempids` does). Each BlueTrace phone has a 21-byte UID and presents
//!   TempIDs issued by a simulated OpenTrace backend under one AES-256-GCM key (derived from
//!   the seed, in the ground truth): a TempID per 15-minute slot of a per-phone grid, valid
//!   from 60 s before its slot to the slot's end. The gateway reads a phone a few seconds
//!   after it arrives, then again every `bluetrace_reread_s` + 0..10 s until it leaves; a read
//!   is an [`Advert`] with `tempid_read` set, drawn from its own random stream so the adverts
//!   stay those of a run without reads.
//! - **Radio.** Each visit has a distance from the gateway, log-uniform in the venue's
//!   `min_distance_m..max_distance_m` (many close, some far). RSSI = TX power + model offset −
//!   loss at 1 m − 10·n·log10(d) + Normal(0, `rssi_noise_db`), rounded and clamped to
//!   −100..−30 dBm.
//!
//! Determinism: everything derives from `seed` through keyed sub-seeds (per venue, per visit,
//! per phone and interval), so a venue's stream depends only on the config, not on which
//! venue is asked for first or how far another stream was consumed. Each gateway of the demo
//! builds the same [`City`] and takes its own venue's [`City::adverts`].
//!
//! Cost: building a city (schedule only) takes milliseconds; adverts are generated lazily,
//! a k-way merge over the visits in progress, with one AES block per rotation.

use crate::advert::{Advert, DeviceAddress, ServiceUuid};
use crate::beacon::{BLUETRACE_MANUFACTURER_ID, GAEN_SERVICE_UUID16};
use crate::bluetrace::{TempId, TempIdKey, TempIdRead, Uid};
use crate::crypto::{Aemk, Enin, INTERVAL_SECONDS, INTERVALS_PER_DAY, Metadata, RpiCipher, Tek};
use rand::{RngExt, SeedableRng};
use rand_chacha::ChaCha8Rng;
use rand_distr::{Distribution, Exp, LogNormal, StandardNormal};
use serde::{Deserialize, Serialize};
use std::cmp::Reverse;
use std::collections::{BTreeMap, BTreeSet, BinaryHeap, HashMap};
use std::fmt;
use std::sync::Arc;

/// The sample BlueTrace production service UUID (`../shared/testdata/bluetrace.md`); the real
/// Wiqaytna one is not public.
pub const DEFAULT_BLUETRACE_SERVICE_UUID: &str = "B82AB3FC-1595-4F6A-80F0-FE094CC218F9";
/// Shortest visit, seconds (before clipping to the simulated window).
pub const MIN_DWELL_S: u64 = 2 * 60;
/// Longest visit, seconds.
pub const MAX_DWELL_S: u64 = 3 * 3600;
/// Time a phone needs between leaving one venue and arriving at the next, seconds.
pub const TRAVEL_S: u64 = 5 * 60;
/// Weakest RSSI the simulated radio reports, dBm.
pub const RSSI_MIN_DBM: i8 = -100;
/// Strongest RSSI the simulated radio reports, dBm.
pub const RSSI_MAX_DBM: i8 = -30;
/// Longest simulation accepted, hours (a leap year, as the gateway config allows; bounds
/// memory and time).
pub const MAX_HOURS: f64 = 366.0 * 24.0;

/// Shape σ of the lognormal dwell time.
const DWELL_SIGMA: f64 = 0.6;
/// Random draws tried before scanning the population for a free phone.
const PICK_ATTEMPTS: usize = 64;
const INTERVAL_MS: u64 = INTERVAL_SECONDS * 1000;

// Domain-separation tags for the keyed sub-seeds.
const TAG_PHONES: u64 = 1;
const TAG_ARRIVALS: u64 = 2;
const TAG_ASSIGN: u64 = 3;
const TAG_VISIT: u64 = 4;
const TAG_TEK: u64 = 5;
const TAG_ROTATION: u64 = 6;
const TAG_ADDRESS: u64 = 7;
const TAG_BLUETRACE: u64 = 8;
const TAG_UID: u64 = 9;
const TAG_TEMPID: u64 = 10;
const TAG_READS: u64 = 11;
const TAG_BACKEND_KEY: u64 = 12;

/// How long a simulated TempID is presented (OpenTrace: 15 minutes).
const TEMPID_SLOT_S: u64 = 900;
/// How long before its slot a TempID becomes valid (OpenTrace: issue time − 60 s).
const TEMPID_EARLY_S: u64 = 60;

/// What to simulate. Every field has a default (see [`SimConfig::default`]); unknown fields
/// are errors when deserializing.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SimConfig {
    /// Seed of every random choice. Default 1.
    pub seed: u64,
    /// Start of the simulated window, Unix seconds. Default 2025-06-02 06:00:00 UTC
    /// (1748844000, on an interval boundary).
    pub start_unix_s: u64,
    /// Length of the simulated window, hours (0 < hours ≤ 8784). Default 16 (06:00–22:00).
    pub hours: f64,
    /// The venues, one gateway each. Default: a supermarket, a souk and a bus station.
    pub venues: Vec<SimVenue>,
    /// Population size. Default 2500.
    pub phones: usize,
    /// Share of phones running BlueTrace (Wiqaytna) instead of GAEN. Default 0.3.
    pub bluetrace_share: f64,
    /// Share of phones later diagnosed (their TEKs end up in an export). Default 0.03.
    pub infected_share: f64,
    /// Mean time between two adverts of one phone that the gateway *hears*, ms (phones send
    /// every ~250 ms; a scanner catches a fraction). Default 2000.
    pub advert_interval_ms: u32,
    /// Standard deviation of the RSSI noise, dB. Default 4.
    pub rssi_noise_db: f64,
    /// Largest delay of an identity rotation after the interval boundary, seconds (< 600).
    /// Default 60.
    pub rotation_jitter_s: u32,
    /// Phone models, drawn uniformly. Default: five models with TX power −8..−20 dBm.
    pub phone_models: Vec<PhoneModel>,
    /// The 128-bit service UUID BlueTrace phones advertise. Default
    /// [`DEFAULT_BLUETRACE_SERVICE_UUID`].
    pub bluetrace_service_uuid: String,
    /// Shape arrival rates by the hour of day (UTC). Default true.
    pub day_curve: bool,
    /// Emit the gateway's GATT reads of BlueTrace phones' TempIDs (a gateway with
    /// `bluetrace.collect_tempids`). Default false.
    pub bluetrace_reads: bool,
    /// Time between two reads of one phone, seconds (10..=3600; plus 0..10 s). Default 100.
    pub bluetrace_reread_s: u32,
    /// Organisation code in the read payloads. Default "MAR".
    pub bluetrace_org: String,
}

impl Default for SimConfig {
    fn default() -> Self {
        Self {
            seed: 1,
            start_unix_s: 1_748_844_000,
            hours: 16.0,
            venues: vec![
                SimVenue::new("supermarket-1", "supermarket", 90.0, 20.0),
                SimVenue {
                    // Open-air stalls: people wander farther from the gateway.
                    max_distance_m: 30.0,
                    path_loss: PathLoss {
                        exponent: 2.2,
                        ..PathLoss::default()
                    },
                    ..SimVenue::new("souk-1", "souk", 120.0, 30.0)
                },
                SimVenue::new("bus-station-1", "bus_station", 150.0, 12.0),
            ],
            phones: 2500,
            bluetrace_share: 0.3,
            infected_share: 0.03,
            advert_interval_ms: 2000,
            rssi_noise_db: 4.0,
            rotation_jitter_s: 60,
            phone_models: vec![
                PhoneModel::new("model-a", -8, -1.0),
                PhoneModel::new("model-b", -11, 0.0),
                PhoneModel::new("model-c", -14, 1.5),
                PhoneModel::new("model-d", -17, -2.0),
                PhoneModel::new("model-e", -20, 1.0),
            ],
            bluetrace_service_uuid: DEFAULT_BLUETRACE_SERVICE_UUID.to_owned(),
            day_curve: true,
            bluetrace_reads: false,
            bluetrace_reread_s: 100,
            bluetrace_org: "MAR".to_owned(),
        }
    }
}

/// One simulated venue and its gateway.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SimVenue {
    /// Venue (and gateway) identifier, unique in the config.
    pub id: String,
    /// Free-form kind ("supermarket", "souk", ...), for people reading the ground truth.
    #[serde(default)]
    pub kind: String,
    /// Peak arrival rate, visits per hour (≥ 0).
    pub arrivals_per_hour: f64,
    /// Mean visit length, minutes (> 0).
    pub mean_dwell_minutes: f64,
    /// Radio propagation in this venue. Default [`PathLoss::default`].
    #[serde(default)]
    pub path_loss: PathLoss,
    /// Closest a visitor stands to the gateway, metres. Default 0.5.
    #[serde(default = "default_min_distance_m")]
    pub min_distance_m: f64,
    /// Farthest a visitor stands from the gateway, metres. Default 20.
    #[serde(default = "default_max_distance_m")]
    pub max_distance_m: f64,
}

fn default_min_distance_m() -> f64 {
    0.5
}

fn default_max_distance_m() -> f64 {
    20.0
}

impl SimVenue {
    /// A venue with the default radio model and distances.
    pub fn new(id: &str, kind: &str, arrivals_per_hour: f64, mean_dwell_minutes: f64) -> Self {
        Self {
            id: id.to_owned(),
            kind: kind.to_owned(),
            arrivals_per_hour,
            mean_dwell_minutes,
            path_loss: PathLoss::default(),
            min_distance_m: default_min_distance_m(),
            max_distance_m: default_max_distance_m(),
        }
    }
}

/// Log-distance path loss: received power = radiated power − `loss_at_1m_db` −
/// 10·`exponent`·log10(distance in m).
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct PathLoss {
    /// Path-loss exponent n: 2 in free space, 2.5–3.5 indoors among people. Default 2.5.
    pub exponent: f64,
    /// Loss at the 1 m reference distance, dB (free space at 2.4 GHz: ≈ 40). Default 41.
    pub loss_at_1m_db: f64,
}

impl Default for PathLoss {
    fn default() -> Self {
        Self {
            exponent: 2.5,
            loss_at_1m_db: 41.0,
        }
    }
}

/// A phone model: what it claims (the calibrated TX power in its metadata or TX power AD) and
/// how far its real radiated power is off that claim.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PhoneModel {
    /// Name, for the ground truth.
    pub name: String,
    /// Calibrated TX power, dBm: metadata byte 1 (GAEN) or the TX power AD (BlueTrace).
    pub tx_power_dbm: i8,
    /// Real radiated power minus `tx_power_dbm`, dB (calibration error). Default 0.
    #[serde(default)]
    pub radiated_offset_db: f64,
}

impl PhoneModel {
    /// A model with the given calibration.
    pub fn new(name: &str, tx_power_dbm: i8, radiated_offset_db: f64) -> Self {
        Self {
            name: name.to_owned(),
            tx_power_dbm,
            radiated_offset_db,
        }
    }
}

/// Why a simulation could not be built or queried.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum SimError {
    /// The config has problems (all of them listed).
    #[error("invalid simulation config: {}", ConfigProblems(.0))]
    InvalidConfig(Vec<ConfigProblem>),
    /// A venue id that is not in the config.
    #[error("no venue {venue:?} in the simulation config (venues: {known})")]
    UnknownVenue {
        /// The id asked for.
        venue: String,
        /// The configured ids, comma-separated.
        known: String,
    },
}

struct ConfigProblems<'a>(&'a [ConfigProblem]);

impl fmt::Display for ConfigProblems<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, problem) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str("; ")?;
            }
            write!(f, "{problem}")?;
        }
        Ok(())
    }
}

/// One problem in a [`SimConfig`].
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum ConfigProblem {
    /// No venue configured.
    #[error("no venues configured")]
    NoVenues,
    /// A venue with an empty id.
    #[error("venue #{index} has an empty id")]
    EmptyVenueId {
        /// Position in the venue list.
        index: usize,
    },
    /// Two venues with the same id.
    #[error("venue id {id:?} is used twice")]
    DuplicateVenue {
        /// The repeated id.
        id: String,
    },
    /// A negative or non-finite arrival rate.
    #[error("venue {venue:?}: arrivals_per_hour {value} must be a finite number ≥ 0")]
    ArrivalRate {
        /// The venue.
        venue: String,
        /// The rate given.
        value: f64,
    },
    /// A non-positive or non-finite mean dwell.
    #[error("venue {venue:?}: mean_dwell_minutes {value} must be a finite number > 0")]
    Dwell {
        /// The venue.
        venue: String,
        /// The dwell given.
        value: f64,
    },
    /// A path-loss model that is not finite, or has an exponent ≤ 0.
    #[error(
        "venue {venue:?}: path_loss exponent {exponent} must be > 0 and loss_at_1m_db \
         {loss_at_1m_db} finite"
    )]
    PathLoss {
        /// The venue.
        venue: String,
        /// The exponent given.
        exponent: f64,
        /// The 1 m loss given.
        loss_at_1m_db: f64,
    },
    /// A distance range that is not 0 < min ≤ max (finite).
    #[error("venue {venue:?}: distances {min} m..{max} m must satisfy 0 < min ≤ max")]
    Distances {
        /// The venue.
        venue: String,
        /// `min_distance_m`.
        min: f64,
        /// `max_distance_m`.
        max: f64,
    },
    /// `hours` not in (0, [`MAX_HOURS`]].
    #[error("hours {0} must be > 0 and ≤ {MAX_HOURS}")]
    Hours(f64),
    /// A window that ends past the last representable interval number.
    #[error("start_unix_s {0} is too far in the future for 32-bit interval numbers")]
    Start(u64),
    /// No phones (or more than 2^32).
    #[error("phones {0} must be between 1 and 4294967295")]
    Phones(usize),
    /// A share outside 0..=1.
    #[error("{field} {value} must be between 0 and 1")]
    Share {
        /// `bluetrace_share` or `infected_share`.
        field: &'static str,
        /// The value given.
        value: f64,
    },
    /// A zero advert interval.
    #[error("advert_interval_ms must be ≥ 1")]
    AdvertInterval,
    /// Negative or non-finite RSSI noise.
    #[error("rssi_noise_db {0} must be a finite number ≥ 0")]
    RssiNoise(f64),
    /// A rotation delay of a whole interval or more.
    #[error("rotation_jitter_s {0} must be < 600 (one interval)")]
    RotationJitter(u32),
    /// No phone models.
    #[error("phone_models is empty")]
    NoPhoneModels,
    /// A phone model whose offset is not finite.
    #[error("phone model {name:?}: radiated_offset_db must be finite")]
    PhoneModelOffset {
        /// The model.
        name: String,
    },
    /// The BlueTrace UUID is not a UUID.
    #[error("bluetrace_service_uuid {0:?} is not a UUID")]
    BluetraceUuid(String),
    /// A re-read period outside 10..=3600 s.
    #[error("bluetrace_reread_s {0} must be between 10 and 3600")]
    Reread(u32),
    /// An organisation code that is not 1-16 of `[A-Za-z0-9_]`.
    #[error("bluetrace_org {0:?} is not 1-16 characters of [A-Za-z0-9_]")]
    Org(String),
}

/// Checks everything, reporting all problems at once; returns the parsed BlueTrace UUID and
/// the end of the window.
fn validate(config: &SimConfig) -> Result<(ServiceUuid, u64), SimError> {
    use ConfigProblem as P;
    let mut problems = Vec::new();
    if config.venues.is_empty() {
        problems.push(P::NoVenues);
    }
    let mut seen = BTreeSet::new();
    for (index, venue) in config.venues.iter().enumerate() {
        let id = venue.id.clone();
        if id.is_empty() {
            problems.push(P::EmptyVenueId { index });
        } else if !seen.insert(venue.id.as_str()) {
            problems.push(P::DuplicateVenue { id: id.clone() });
        }
        let rate = venue.arrivals_per_hour;
        if !(rate.is_finite() && rate >= 0.0) {
            problems.push(P::ArrivalRate {
                venue: id.clone(),
                value: rate,
            });
        }
        let dwell = venue.mean_dwell_minutes;
        if !(dwell.is_finite() && dwell > 0.0) {
            problems.push(P::Dwell {
                venue: id.clone(),
                value: dwell,
            });
        }
        let pl = venue.path_loss;
        if !(pl.exponent.is_finite() && pl.exponent > 0.0 && pl.loss_at_1m_db.is_finite()) {
            problems.push(P::PathLoss {
                venue: id.clone(),
                exponent: pl.exponent,
                loss_at_1m_db: pl.loss_at_1m_db,
            });
        }
        let (min, max) = (venue.min_distance_m, venue.max_distance_m);
        if !(min.is_finite() && max.is_finite() && min > 0.0 && min <= max) {
            problems.push(P::Distances {
                venue: id,
                min,
                max,
            });
        }
    }
    let hours_ok = config.hours.is_finite() && config.hours > 0.0 && config.hours <= MAX_HOURS;
    if !hours_ok {
        problems.push(P::Hours(config.hours));
    }
    let end_s = config
        .start_unix_s
        .checked_add(if hours_ok {
            (config.hours * 3600.0).round() as u64
        } else {
            0
        })
        .filter(|end| *end / INTERVAL_SECONDS < u64::from(u32::MAX) - 1);
    if end_s.is_none() {
        problems.push(P::Start(config.start_unix_s));
    }
    if config.phones == 0 || u32::try_from(config.phones).is_err() {
        problems.push(P::Phones(config.phones));
    }
    for (field, value) in [
        ("bluetrace_share", config.bluetrace_share),
        ("infected_share", config.infected_share),
    ] {
        if !(0.0..=1.0).contains(&value) {
            problems.push(P::Share { field, value });
        }
    }
    if config.advert_interval_ms == 0 {
        problems.push(P::AdvertInterval);
    }
    if !(config.rssi_noise_db.is_finite() && config.rssi_noise_db >= 0.0) {
        problems.push(P::RssiNoise(config.rssi_noise_db));
    }
    if u64::from(config.rotation_jitter_s) >= INTERVAL_SECONDS {
        problems.push(P::RotationJitter(config.rotation_jitter_s));
    }
    if config.phone_models.is_empty() {
        problems.push(P::NoPhoneModels);
    }
    for model in &config.phone_models {
        if !model.radiated_offset_db.is_finite() {
            problems.push(P::PhoneModelOffset {
                name: model.name.clone(),
            });
        }
    }
    if !(10..=3600).contains(&config.bluetrace_reread_s) {
        problems.push(P::Reread(config.bluetrace_reread_s));
    }
    if !crate::bluetrace::valid_org(&config.bluetrace_org) {
        problems.push(P::Org(config.bluetrace_org.clone()));
    }
    let uuid = ServiceUuid::parse(&config.bluetrace_service_uuid);
    if uuid.is_none() {
        problems.push(P::BluetraceUuid(config.bluetrace_service_uuid.clone()));
    }
    match (uuid, end_s) {
        (Some(uuid), Some(end_s)) if problems.is_empty() => Ok((uuid, end_s)),
        _ => Err(SimError::InvalidConfig(problems)),
    }
}

/// Which app a phone runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum PhoneKind {
    /// Google/Apple Exposure Notification: RPI + AEM under 0xFD6F.
    Gaen,
    /// BlueTrace/OpenTrace (Wiqaytna): a service UUID and manufacturer data, no identifier.
    Bluetrace,
}

#[derive(Clone, Copy, Debug)]
struct Phone {
    kind: PhoneKind,
    infected: bool,
    model: usize,
}

#[derive(Clone, Copy, Debug)]
struct Visit {
    phone: u32,
    arrive_s: u64,
    leave_s: u64,
    distance_m: f64,
    seed: u64,
}

#[derive(Debug)]
struct VenueSchedule {
    id: String,
    path_loss: PathLoss,
    /// Sorted by arrival.
    visits: Vec<Visit>,
}

/// What every venue stream needs, shared by reference count so streams own their data.
#[derive(Debug)]
struct Population {
    seed: u64,
    phones: Vec<Phone>,
    models: Vec<PhoneModel>,
    advert_interval_ms: f64,
    rssi_noise_db: f64,
    rotation_jitter_ms: u64,
    bluetrace_uuid: ServiceUuid,
    /// `Some` when the gateway reads TempIDs.
    reads: Option<Reads>,
}

/// The simulated TempID backend and the gateway's read schedule.
#[derive(Debug)]
struct Reads {
    key: TempIdKey,
    reread_ms: u64,
    org: String,
}

/// A simulated city day: the population and every venue's visit schedule, built from a
/// [`SimConfig`]. Adverts are generated on demand per venue ([`City::adverts`]).
#[derive(Debug)]
pub struct City {
    population: Arc<Population>,
    venues: Vec<Arc<VenueSchedule>>,
    start_s: u64,
    end_s: u64,
    arrivals_without_free_phone: u64,
}

/// SplitMix64's finaliser: a fast, well-mixed 64-bit permutation.
fn splitmix(mut z: u64) -> u64 {
    z = z.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// A sub-seed keyed by `parts` (tag first): independent streams for independent things.
fn mix(parts: &[u64]) -> u64 {
    parts
        .iter()
        .fold(0x6a09_e667_f3bc_c908, |h, p| splitmix(h ^ p))
}

fn rng_for(parts: &[u64]) -> ChaCha8Rng {
    ChaCha8Rng::seed_from_u64(mix(parts))
}

/// Relative arrival rate at a UTC time: 0.15 at night, 1 at the 12:30 and 18:30 peaks.
fn day_curve(unix_s: f64) -> f64 {
    let hour = (unix_s % 86_400.0) / 3600.0;
    let peak = |centre: f64| (-((hour - centre) / 2.0).powi(2) / 2.0).exp();
    0.15 + 0.85 * peak(12.5).max(peak(18.5))
}

/// One arrival before it is given a phone.
struct Arrival {
    venue: usize,
    seq: u64,
    arrive_s: u64,
    dwell_s: u64,
    distance_m: f64,
}

impl City {
    /// Validates `config` and builds the population and every venue's visits.
    pub fn new(config: &SimConfig) -> Result<City, SimError> {
        let (bluetrace_uuid, end_s) = validate(config)?;
        let seed = config.seed;
        let start_s = config.start_unix_s;

        let mut rng = rng_for(&[TAG_PHONES, seed]);
        let phones: Vec<Phone> = (0..config.phones)
            .map(|_| Phone {
                kind: if rng.random_bool(config.bluetrace_share) {
                    PhoneKind::Bluetrace
                } else {
                    PhoneKind::Gaen
                },
                infected: rng.random_bool(config.infected_share),
                model: rng.random_range(0..config.phone_models.len()),
            })
            .collect();

        let mut arrivals = Vec::new();
        for (vi, venue) in config.venues.iter().enumerate() {
            if venue.arrivals_per_hour == 0.0 {
                continue;
            }
            let mut rng = rng_for(&[TAG_ARRIVALS, seed, vi as u64]);
            // Validated above: rate > 0 and finite, mean > 0 and finite.
            let Ok(gaps) = Exp::new(venue.arrivals_per_hour / 3600.0) else {
                continue;
            };
            let mean_s = venue.mean_dwell_minutes * 60.0;
            let mu = mean_s.ln() - DWELL_SIGMA * DWELL_SIGMA / 2.0;
            let Ok(dwell) = LogNormal::new(mu, DWELL_SIGMA) else {
                continue;
            };
            let (min_d, ratio) = (
                venue.min_distance_m,
                venue.max_distance_m / venue.min_distance_m,
            );
            let mut t = start_s as f64;
            let mut seq = 0;
            loop {
                t += gaps.sample(&mut rng);
                if t >= end_s as f64 {
                    break;
                }
                // Thinning: a candidate at the peak rate is kept with the curve's probability.
                if config.day_curve && !rng.random_bool(day_curve(t)) {
                    continue;
                }
                let dwell_s =
                    (dwell.sample(&mut rng).round() as u64).clamp(MIN_DWELL_S, MAX_DWELL_S);
                let distance_m = min_d * ratio.powf(rng.random::<f64>());
                arrivals.push(Arrival {
                    venue: vi,
                    seq,
                    arrive_s: (t as u64).min(end_s - 1),
                    dwell_s,
                    distance_m: (distance_m * 100.0).round() / 100.0,
                });
                seq += 1;
            }
        }
        arrivals.sort_by_key(|a| (a.arrive_s, a.venue, a.seq));

        let mut venues: Vec<VenueSchedule> = config
            .venues
            .iter()
            .map(|v| VenueSchedule {
                id: v.id.clone(),
                path_loss: v.path_loss,
                visits: Vec::new(),
            })
            .collect();
        // The first second each phone may arrive somewhere.
        let mut free_from = vec![0u64; phones.len()];
        let mut rng = rng_for(&[TAG_ASSIGN, seed]);
        let mut arrivals_without_free_phone = 0;
        for a in arrivals {
            let Some(phone) = pick_free(&mut rng, &free_from, a.arrive_s) else {
                arrivals_without_free_phone += 1;
                continue;
            };
            let leave_s = (a.arrive_s + a.dwell_s).min(end_s);
            free_from[phone] = leave_s + TRAVEL_S;
            venues[a.venue].visits.push(Visit {
                phone: phone as u32,
                arrive_s: a.arrive_s,
                leave_s,
                distance_m: a.distance_m,
                seed: mix(&[TAG_VISIT, seed, a.venue as u64, a.seq]),
            });
        }

        Ok(City {
            population: Arc::new(Population {
                seed,
                phones,
                models: config.phone_models.clone(),
                advert_interval_ms: f64::from(config.advert_interval_ms),
                rssi_noise_db: config.rssi_noise_db,
                rotation_jitter_ms: u64::from(config.rotation_jitter_s) * 1000,
                bluetrace_uuid,
                reads: config.bluetrace_reads.then(|| Reads {
                    key: backend_key(seed),
                    reread_ms: u64::from(config.bluetrace_reread_s) * 1000,
                    org: config.bluetrace_org.clone(),
                }),
            }),
            venues: venues.into_iter().map(Arc::new).collect(),
            start_s,
            end_s,
            arrivals_without_free_phone,
        })
    }

    /// The venue ids, in config order.
    pub fn venue_ids(&self) -> impl Iterator<Item = &str> {
        self.venues.iter().map(|v| v.id.as_str())
    }

    /// The simulated window, Unix seconds: `[start, end)`.
    pub fn window_unix_s(&self) -> (u64, u64) {
        (self.start_s, self.end_s)
    }

    /// The adverts `venue_id`'s gateway hears, in time order, generated lazily. The stream
    /// owns what it needs (it can outlive `self` and move to another task).
    pub fn adverts(&self, venue_id: &str) -> Result<VenueAdverts, SimError> {
        let venue = self
            .venues
            .iter()
            .find(|v| v.id == venue_id)
            .ok_or_else(|| SimError::UnknownVenue {
                venue: venue_id.to_owned(),
                known: self.venue_ids().collect::<Vec<_>>().join(", "),
            })?;
        Ok(VenueAdverts {
            population: Arc::clone(&self.population),
            venue: Arc::clone(venue),
            next_visit: 0,
            heap: BinaryHeap::new(),
            slots: Vec::new(),
            free_slots: Vec::new(),
        })
    }

    /// Who was where, and the keys of every GAEN phone: what the authority should find.
    pub fn ground_truth(&self) -> GroundTruth {
        let pop = &self.population;
        let jitter_s = pop.rotation_jitter_ms / 1000;
        // Days whose intervals can be broadcast in the window: a rotation delay makes the
        // first seconds of a day carry the previous day's last RPI.
        let first_day =
            (self.start_s.saturating_sub(jitter_s) / INTERVAL_SECONDS) as u32 / INTERVALS_PER_DAY;
        let last_day =
            ((self.end_s.saturating_sub(1)) / INTERVAL_SECONDS) as u32 / INTERVALS_PER_DAY;
        let mut phones: Vec<PhoneTruth> = pop
            .phones
            .iter()
            .enumerate()
            .map(|(i, phone)| {
                let model = &pop.models[phone.model];
                PhoneTruth {
                    id: i as u32,
                    kind: phone.kind,
                    infected: phone.infected,
                    model: model.name.clone(),
                    tx_power_dbm: model.tx_power_dbm,
                    teks: match phone.kind {
                        PhoneKind::Gaen => (first_day..=last_day)
                            .map(|day| TekTruth {
                                key_data: tek(pop.seed, i as u32, day).to_hex(),
                                rolling_start_interval_number: day * INTERVALS_PER_DAY,
                                rolling_period: INTERVALS_PER_DAY,
                            })
                            .collect(),
                        PhoneKind::Bluetrace => Vec::new(),
                    },
                    uid: (phone.kind == PhoneKind::Bluetrace)
                        .then(|| uid(pop.seed, i as u32).to_base64()),
                    visits: Vec::new(),
                }
            })
            .collect();
        for venue in &self.venues {
            for visit in &venue.visits {
                phones[visit.phone as usize].visits.push(VisitTruth {
                    venue: venue.id.clone(),
                    arrive_unix_s: visit.arrive_s,
                    leave_unix_s: visit.leave_s,
                    mean_distance_m: visit.distance_m,
                });
            }
        }
        for phone in &mut phones {
            phone.visits.sort_by_key(|v| v.arrive_unix_s);
        }
        GroundTruth {
            seed: pop.seed,
            start_unix_s: self.start_s,
            end_unix_s: self.end_s,
            venues: self.venues.iter().map(|v| v.id.clone()).collect(),
            arrivals_without_free_phone: self.arrivals_without_free_phone,
            bluetrace_key: base64::Engine::encode(
                &base64::engine::general_purpose::STANDARD,
                backend_key_bytes(pop.seed),
            ),
            phones,
        }
    }
}

/// The simulated OpenTrace backend's TempID key.
fn backend_key_bytes(seed: u64) -> [u8; 32] {
    let mut bytes = [0u8; 32];
    rng_for(&[TAG_BACKEND_KEY, seed]).fill(&mut bytes);
    bytes
}

fn backend_key(seed: u64) -> TempIdKey {
    TempIdKey::new(&backend_key_bytes(seed))
}

/// A BlueTrace phone's UID.
fn uid(seed: u64, phone: u32) -> Uid {
    let mut bytes = [0u8; 21];
    rng_for(&[TAG_UID, seed, u64::from(phone)]).fill(&mut bytes);
    Uid::from_bytes(bytes)
}

/// A phone free at `arrive_s`: uniform random draws first, then a scan from a random start
/// (so a nearly busy population still finds its last free phone).
fn pick_free(rng: &mut ChaCha8Rng, free_from: &[u64], arrive_s: u64) -> Option<usize> {
    let n = free_from.len();
    for _ in 0..PICK_ATTEMPTS {
        let i = rng.random_range(0..n);
        if free_from[i] <= arrive_s {
            return Some(i);
        }
    }
    let start = rng.random_range(0..n);
    (0..n)
        .map(|k| (start + k) % n)
        .find(|&i| free_from[i] <= arrive_s)
}

/// The TEK of `phone` for UTC day `day` (interval numbers `day * 144 ..`).
fn tek(seed: u64, phone: u32, day: u32) -> Tek {
    let mut bytes = [0u8; 16];
    rng_for(&[TAG_TEK, seed, u64::from(phone), u64::from(day)]).fill(&mut bytes);
    Tek::from_bytes(bytes)
}

impl Population {
    /// When `phone` rotates into interval `k`'s identity, Unix ms.
    fn rotation_ms(&self, phone: u32, k: u32) -> u64 {
        let delay = if self.rotation_jitter_ms == 0 {
            0
        } else {
            mix(&[TAG_ROTATION, self.seed, u64::from(phone), u64::from(k)])
                % self.rotation_jitter_ms
        };
        u64::from(k) * INTERVAL_MS + delay
    }

    /// The address `phone` uses with interval `k`'s identity: random, with the top two bits
    /// `01` of a resolvable private address (byte 0 is the most significant, as displayed).
    fn address(&self, phone: u32, k: u32) -> DeviceAddress {
        let h = mix(&[TAG_ADDRESS, self.seed, u64::from(phone), u64::from(k)]).to_be_bytes();
        DeviceAddress([(h[0] & 0x3F) | 0x40, h[1], h[2], h[3], h[4], h[5]])
    }

    /// The TempID `phone` presents at `t_ms`: that of its 15-minute slot (on a per-phone grid),
    /// valid from 60 s before the slot to its end.
    fn tempid(&self, reads: &Reads, phone: u32, t_ms: u64) -> TempId {
        let offset_s = mix(&[TAG_TEMPID, self.seed, u64::from(phone)]) % TEMPID_SLOT_S;
        let slot = (t_ms / 1000).saturating_sub(offset_s) / TEMPID_SLOT_S;
        let slot_start = (slot * TEMPID_SLOT_S + offset_s) as i64;
        let mut iv = [0u8; 16];
        rng_for(&[TAG_TEMPID, self.seed, u64::from(phone), slot]).fill(&mut iv);
        let clamp = |s: i64| i32::try_from(s).unwrap_or(i32::MAX);
        reads.key.encrypt(
            &uid(self.seed, phone),
            clamp(slot_start - TEMPID_EARLY_S as i64),
            clamp(slot_start + TEMPID_SLOT_S as i64),
            &iv,
        )
    }

    /// The 3 random ASCII characters of a BlueTrace phone's manufacturer data.
    fn bluetrace_chars(&self, phone: u32, k: u32) -> [u8; 3] {
        const ALPHABET: &[u8; 62] =
            b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789";
        let h = mix(&[TAG_BLUETRACE, self.seed, u64::from(phone), u64::from(k)]);
        [0, 1, 2].map(|i| ALPHABET[((h >> (16 * i)) % 62) as usize])
    }
}

/// What a phone broadcasts between two rotations.
#[derive(Clone, Copy)]
enum Payload {
    Gaen([u8; 20]),
    Bluetrace([u8; 3]),
}

#[derive(Clone, Copy)]
struct Identity {
    /// When the next rotation happens, Unix ms.
    until_ms: u64,
    address: DeviceAddress,
    payload: Payload,
}

/// One visit in progress: its RNG, next advert time and current identity.
struct VisitStream {
    rng: ChaCha8Rng,
    phone: u32,
    next_ms: u64,
    leave_ms: u64,
    /// Mean RSSI at this visit's distance, dBm.
    rssi_mean: f64,
    identity: Option<Identity>,
    /// The day's keys, cached: (day, RPI cipher, AEMK).
    keys: Option<(u32, RpiCipher, Aemk)>,
    /// Next TempID read, Unix ms (BlueTrace phones, when the gateway reads them), with its
    /// own random stream.
    reads: Option<(u64, ChaCha8Rng)>,
}

/// The adverts one venue's gateway hears, in time order (ties in visit order): a lazy k-way
/// merge of the visits in progress, so memory is bounded by the visitors present at once.
/// Built by [`City::adverts`].
pub struct VenueAdverts {
    population: Arc<Population>,
    venue: Arc<VenueSchedule>,
    /// Next visit (index into `venue.visits`) not yet started.
    next_visit: usize,
    /// (next advert ms, visit index, slot), smallest first.
    heap: BinaryHeap<Reverse<(u64, usize, usize)>>,
    slots: Vec<Option<VisitStream>>,
    free_slots: Vec<usize>,
}

impl fmt::Debug for VenueAdverts {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("VenueAdverts")
            .field("venue", &self.venue.id)
            .field("next_visit", &self.next_visit)
            .field("in_progress", &self.heap.len())
            .finish()
    }
}

impl VenueAdverts {
    /// The venue's id.
    pub fn venue(&self) -> &str {
        &self.venue.id
    }

    /// How many visits the venue has in the whole simulation.
    pub fn visits(&self) -> usize {
        self.venue.visits.len()
    }

    fn start_visit(&mut self, index: usize) {
        let visit = self.venue.visits[index];
        let pop = &self.population;
        let phone = pop.phones[visit.phone as usize];
        let model = &pop.models[phone.model];
        let pl = self.venue.path_loss;
        let mut rng = ChaCha8Rng::seed_from_u64(visit.seed);
        let rssi_mean = f64::from(model.tx_power_dbm) + model.radiated_offset_db
            - pl.loss_at_1m_db
            - 10.0 * pl.exponent * visit.distance_m.log10();
        // Heard within the first second; leave_s ≥ arrive_s + 1, so every visit has an advert.
        let next_ms = visit.arrive_s * 1000 + rng.random_range(0..1000u64);
        let reads = match (&pop.reads, phone.kind) {
            (Some(_), PhoneKind::Bluetrace) => {
                let mut rng = rng_for(&[TAG_READS, visit.seed]);
                // Connecting takes the gateway a few seconds after the first advert.
                let first = next_ms + rng.random_range(1_000..5_000u64);
                (first < visit.leave_s * 1000).then_some((first, rng))
            }
            _ => None,
        };
        let stream = VisitStream {
            rng,
            phone: visit.phone,
            next_ms,
            leave_ms: visit.leave_s * 1000,
            rssi_mean,
            identity: None,
            keys: None,
            reads,
        };
        let slot = match self.free_slots.pop() {
            Some(slot) => {
                self.slots[slot] = Some(stream);
                slot
            }
            None => {
                self.slots.push(Some(stream));
                self.slots.len() - 1
            }
        };
        self.heap.push(Reverse((next_ms, index, slot)));
    }
}

impl VisitStream {
    /// The identity broadcast at `t_ms`, rotating if its time has come.
    fn identity_at(&mut self, pop: &Population, t_ms: u64) -> Identity {
        if let Some(id) = self.identity
            && t_ms < id.until_ms
        {
            return id;
        }
        let k0 = (t_ms / INTERVAL_MS) as u32;
        let (k, until_ms) = if t_ms >= pop.rotation_ms(self.phone, k0) {
            (k0, pop.rotation_ms(self.phone, k0 + 1))
        } else {
            (k0.saturating_sub(1), pop.rotation_ms(self.phone, k0))
        };
        let phone = pop.phones[self.phone as usize];
        let payload = match phone.kind {
            PhoneKind::Gaen => {
                let day = k / INTERVALS_PER_DAY;
                let (cipher, aemk) = match &self.keys {
                    Some((d, cipher, aemk)) if *d == day => (cipher, aemk),
                    _ => {
                        let (rpik, aemk) = tek(pop.seed, self.phone, day).keys();
                        let keys = self.keys.insert((day, rpik.cipher(), aemk));
                        (&keys.1, &keys.2)
                    }
                };
                let rpi = cipher.rpi(Enin(k));
                let metadata = Metadata::v1_0(pop.models[phone.model].tx_power_dbm);
                let aem = aemk.encrypt(&rpi, metadata.to_bytes());
                let mut data = [0u8; 20];
                data[..16].copy_from_slice(rpi.as_bytes());
                data[16..].copy_from_slice(aem.as_bytes());
                Payload::Gaen(data)
            }
            PhoneKind::Bluetrace => Payload::Bluetrace(pop.bluetrace_chars(self.phone, k)),
        };
        let id = Identity {
            until_ms,
            address: pop.address(self.phone, k),
            payload,
        };
        self.identity = Some(id);
        id
    }

    /// When this visit's next advert or read is due, Unix ms.
    fn next_event_ms(&self) -> u64 {
        self.reads
            .as_ref()
            .map_or(self.next_ms, |(read_ms, _)| self.next_ms.min(*read_ms))
    }

    /// Whether the visit has nothing more before its departure.
    fn done(&self) -> bool {
        self.next_event_ms() >= self.leave_ms
    }

    /// The next advert or read; moves the visit on.
    fn emit(&mut self, pop: &Population) -> Advert {
        if let (Some((read_ms, rng)), Some(backend)) = (self.reads.as_mut(), pop.reads.as_ref())
            && *read_ms < self.next_ms
        {
            let t_ms = *read_ms;
            let noise: f64 = rng.sample(StandardNormal);
            let rssi = (self.rssi_mean + pop.rssi_noise_db * noise)
                .round()
                .clamp(f64::from(RSSI_MIN_DBM), f64::from(RSSI_MAX_DBM))
                as i8;
            *read_ms = t_ms + backend.reread_ms + rng.random_range(0..10_000u64);
            if *read_ms >= self.leave_ms {
                self.reads = None;
            }
            return Advert {
                time_ms: t_ms,
                address: self.identity_at(pop, t_ms).address,
                rssi,
                tempid_read: Some(TempIdRead {
                    tempid: pop.tempid(backend, self.phone, t_ms),
                    org: backend.org.clone(),
                }),
                ..Advert::default()
            };
        }
        let t_ms = self.next_ms;
        let id = self.identity_at(pop, t_ms);
        let noise: f64 = self.rng.sample(StandardNormal);
        let rssi = (self.rssi_mean + pop.rssi_noise_db * noise)
            .round()
            .clamp(f64::from(RSSI_MIN_DBM), f64::from(RSSI_MAX_DBM)) as i8;
        let gap = pop.advert_interval_ms * self.rng.random_range(0.5..1.5);
        self.next_ms = t_ms + (gap.round() as u64).max(1);
        let phone = pop.phones[self.phone as usize];
        let mut advert = Advert {
            time_ms: t_ms,
            address: id.address,
            rssi,
            ..Advert::default()
        };
        match id.payload {
            Payload::Gaen(data) => {
                let gaen = ServiceUuid::from_u16(GAEN_SERVICE_UUID16);
                advert.service_uuids = vec![gaen];
                advert.service_data = vec![(gaen, data.to_vec())];
            }
            Payload::Bluetrace(chars) => {
                advert.service_uuids = vec![pop.bluetrace_uuid];
                advert.tx_power = Some(pop.models[phone.model].tx_power_dbm);
                advert.manufacturer_data = vec![(BLUETRACE_MANUFACTURER_ID, chars.to_vec())];
            }
        }
        advert
    }
}

impl Iterator for VenueAdverts {
    type Item = Advert;

    fn next(&mut self) -> Option<Advert> {
        // Start every visit that could be heard before (or with) the earliest pending advert:
        // a visit's first advert is at or after its arrival, and visits are sorted by arrival.
        while let Some(visit) = self.venue.visits.get(self.next_visit) {
            let due = self
                .heap
                .peek()
                .is_none_or(|Reverse((t, _, _))| visit.arrive_s * 1000 <= *t);
            if !due {
                break;
            }
            self.start_visit(self.next_visit);
            self.next_visit += 1;
        }
        let Reverse((_, index, slot)) = self.heap.pop()?;
        let stream = self.slots[slot].as_mut()?;
        let advert = stream.emit(&self.population);
        if !stream.done() {
            self.heap
                .push(Reverse((stream.next_event_ms(), index, slot)));
        } else {
            self.slots[slot] = None;
            self.free_slots.push(slot);
        }
        Some(advert)
    }
}

/// Who was where, and the keys the GAEN phones used: what a perfect authority would find.
/// Written as JSON by the sim source for the demo to compare with.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct GroundTruth {
    /// The config's seed.
    pub seed: u64,
    /// Start of the simulated window, Unix seconds.
    pub start_unix_s: u64,
    /// End of the simulated window (exclusive), Unix seconds.
    pub end_unix_s: u64,
    /// The venue ids, in config order.
    pub venues: Vec<String>,
    /// Arrivals dropped because every phone was busy (population too small for the rates).
    pub arrivals_without_free_phone: u64,
    /// The simulated OpenTrace backend's TempID key (AES-256-GCM), base64: what the
    /// authority's `bluetrace.key_files` must hold to decrypt the simulated TempIDs.
    #[serde(default)]
    pub bluetrace_key: String,
    /// Every phone of the population, by id (the index).
    pub phones: Vec<PhoneTruth>,
}

/// One simulated phone.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct PhoneTruth {
    /// Phone id (its index in [`GroundTruth::phones`]).
    pub id: u32,
    /// GAEN or BlueTrace.
    pub kind: PhoneKind,
    /// Diagnosed later: its TEKs belong in the demo's diagnosis-key export.
    pub infected: bool,
    /// Phone model name.
    pub model: String,
    /// Calibrated TX power the phone advertises, dBm.
    pub tx_power_dbm: i8,
    /// The phone's TEKs for every day of the window (GAEN phones only).
    pub teks: Vec<TekTruth>,
    /// The phone's BlueTrace UID, base64 (BlueTrace phones only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub uid: Option<String>,
    /// The phone's visits, by arrival.
    pub visits: Vec<VisitTruth>,
}

/// A TEK as an export file carries it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct TekTruth {
    /// The 16 key bytes, hex.
    pub key_data: String,
    /// First interval of the key (the day's first ENIN).
    pub rolling_start_interval_number: u32,
    /// Intervals the key is valid for (144).
    pub rolling_period: u32,
}

/// One visit of one phone.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct VisitTruth {
    /// Venue id.
    pub venue: String,
    /// Arrival, Unix seconds (the first advert is heard within the following second).
    pub arrive_unix_s: u64,
    /// Departure, Unix seconds, exclusive (no advert at or after it).
    pub leave_unix_s: u64,
    /// Distance from the gateway during the visit, metres (cm precision).
    pub mean_distance_m: f64,
}

/// A venue-hour where an infected GAEN phone was present.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ExposedVenueHour {
    /// Venue id.
    pub venue: String,
    /// Start of the UTC hour, Unix seconds (a multiple of 3600).
    pub hour_start_unix_s: u64,
    /// Distinct infected GAEN phones present in that venue-hour.
    pub infected_phones: usize,
    /// Distinct other phones (any kind, infected or not) whose visit to the venue overlaps an
    /// infected phone's presence within that hour.
    pub co_present_phones: usize,
    /// Of those, the GAEN phones (the ones a gateway can tell apart by RPI).
    pub co_present_gaen_phones: usize,
}

/// A BlueTrace contact: another BlueTrace phone at the same venue as an infected BlueTrace
/// phone, with how long their visits overlapped.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct BluetraceContact {
    /// The infected phone's UID (base64).
    pub case_uid: String,
    /// Venue id.
    pub venue: String,
    /// The other phone's UID (base64).
    pub contact_uid: String,
    /// Seconds their visits overlapped (summed over visits).
    pub overlap_s: u64,
}

/// A venue-hour where an infected BlueTrace phone was present.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct BluetraceVenueHour {
    /// Venue id.
    pub venue: String,
    /// Start of the UTC hour, Unix seconds.
    pub hour_start_unix_s: u64,
    /// Distinct infected BlueTrace phones present in that hour.
    pub cases: usize,
    /// Distinct other BlueTrace phones whose visit overlaps an infected one's presence within
    /// that hour.
    pub contacts: usize,
}

impl GroundTruth {
    /// Every (venue, hour) where an infected BlueTrace phone was present, with its distinct
    /// co-present BlueTrace phones (visits overlapping the infected phone's visit clipped to
    /// the hour, half-open). Sorted by venue, hour. What the authority's `bt_cases` and
    /// `bt_contacts` estimate once the infected phones are registered as cases.
    pub fn bluetrace_venue_hours(&self) -> Vec<BluetraceVenueHour> {
        let mut at_venue: BTreeMap<&str, Vec<(u32, bool, &VisitTruth)>> = BTreeMap::new();
        for phone in self
            .phones
            .iter()
            .filter(|p| p.kind == PhoneKind::Bluetrace)
        {
            for visit in &phone.visits {
                at_venue.entry(visit.venue.as_str()).or_default().push((
                    phone.id,
                    phone.infected,
                    visit,
                ));
            }
        }
        type Sets = (BTreeSet<u32>, BTreeSet<u32>);
        let mut hours: BTreeMap<(&str, u64), Sets> = BTreeMap::new();
        for (venue, visits) in &at_venue {
            for &(case, infected, cv) in visits {
                if !infected {
                    continue;
                }
                for hour in cv.arrive_unix_s / 3600..=(cv.leave_unix_s - 1) / 3600 {
                    let (from, to) = (
                        cv.arrive_unix_s.max(hour * 3600),
                        cv.leave_unix_s.min(hour * 3600 + 3600),
                    );
                    let (cases, contacts) = hours.entry((venue, hour * 3600)).or_default();
                    cases.insert(case);
                    for &(other, _, ov) in visits {
                        if other != case && ov.arrive_unix_s < to && from < ov.leave_unix_s {
                            contacts.insert(other);
                        }
                    }
                }
            }
        }
        hours
            .into_iter()
            .map(|((venue, hour), (cases, contacts))| BluetraceVenueHour {
                venue: venue.to_owned(),
                hour_start_unix_s: hour,
                contacts: contacts.difference(&cases).count(),
                cases: cases.len(),
            })
            .collect()
    }

    /// Every pair (infected BlueTrace phone, other BlueTrace phone) whose visits to a venue
    /// overlap (half-open intervals), per venue, with the overlap summed over visits; sorted.
    /// What a health team's BlueTrace contact list should hold.
    pub fn bluetrace_contacts(&self) -> Vec<BluetraceContact> {
        let mut at_venue: BTreeMap<&str, Vec<(&str, bool, &VisitTruth)>> = BTreeMap::new();
        for phone in &self.phones {
            let Some(uid) = phone.uid.as_deref() else {
                continue;
            };
            for visit in &phone.visits {
                at_venue.entry(visit.venue.as_str()).or_default().push((
                    uid,
                    phone.infected,
                    visit,
                ));
            }
        }
        let mut pairs: BTreeMap<(&str, &str, &str), u64> = BTreeMap::new();
        for (venue, visits) in &at_venue {
            for &(case, infected, cv) in visits {
                if !infected {
                    continue;
                }
                for &(other, _, ov) in visits {
                    let from = cv.arrive_unix_s.max(ov.arrive_unix_s);
                    let to = cv.leave_unix_s.min(ov.leave_unix_s);
                    if other != case && from < to {
                        *pairs.entry((case, venue, other)).or_default() += to - from;
                    }
                }
            }
        }
        pairs
            .into_iter()
            .map(|((case, venue, other), overlap_s)| BluetraceContact {
                case_uid: case.to_owned(),
                venue: venue.to_owned(),
                contact_uid: other.to_owned(),
                overlap_s,
            })
            .collect()
    }

    /// Every (venue, hour) where an infected GAEN phone was present, with the number of
    /// distinct other phones co-present: phones whose visit to the venue overlaps (half-open
    /// intervals) the infected phone's visit clipped to that hour. Sorted by venue, hour.
    pub fn exposed_venue_hours(&self) -> Vec<ExposedVenueHour> {
        let by_id: HashMap<u32, &PhoneTruth> = self.phones.iter().map(|p| (p.id, p)).collect();
        let mut at_venue: BTreeMap<&str, Vec<(u32, &VisitTruth)>> = BTreeMap::new();
        for phone in &self.phones {
            for visit in &phone.visits {
                at_venue
                    .entry(visit.venue.as_str())
                    .or_default()
                    .push((phone.id, visit));
            }
        }
        type Sets = (BTreeSet<u32>, BTreeSet<u32>);
        let mut hours: BTreeMap<(&str, u64), Sets> = BTreeMap::new();
        for (venue, visits) in &at_venue {
            for &(id, visit) in visits {
                let infected_gaen = by_id
                    .get(&id)
                    .is_some_and(|p| p.infected && p.kind == PhoneKind::Gaen);
                if !infected_gaen {
                    continue;
                }
                let mut hour = visit.arrive_unix_s / 3600 * 3600;
                while hour < visit.leave_unix_s {
                    let lo = visit.arrive_unix_s.max(hour);
                    let hi = visit.leave_unix_s.min(hour + 3600);
                    if lo < hi {
                        let (infected, co) = hours.entry((venue, hour)).or_default();
                        infected.insert(id);
                        co.extend(
                            visits
                                .iter()
                                .filter(|(other, w)| {
                                    *other != id && w.arrive_unix_s < hi && lo < w.leave_unix_s
                                })
                                .map(|(other, _)| *other),
                        );
                    }
                    hour += 3600;
                }
            }
        }
        hours
            .into_iter()
            .map(|((venue, hour), (infected, co))| ExposedVenueHour {
                venue: venue.to_owned(),
                hour_start_unix_s: hour,
                infected_phones: infected.len(),
                co_present_gaen_phones: co
                    .iter()
                    .filter(|id| by_id.get(id).is_some_and(|p| p.kind == PhoneKind::Gaen))
                    .count(),
                co_present_phones: co.len(),
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::beacon::{Beacon, classify};
    use crate::bluetrace::TempIdKey;
    use crate::crypto::Rpi;

    /// 2025-06-02 23:00 UTC: the small city crosses midnight, so TEKs change mid-visit.
    const LATE: u64 = 1_748_905_200;

    fn small(seed: u64) -> SimConfig {
        SimConfig {
            seed,
            start_unix_s: LATE,
            hours: 2.0,
            phones: 150,
            day_curve: false,
            advert_interval_ms: 5000,
            venues: vec![
                SimVenue::new("shop", "supermarket", 40.0, 15.0),
                SimVenue::new("souk", "souk", 50.0, 20.0),
                SimVenue::new("bus", "bus_station", 60.0, 8.0),
            ],
            ..SimConfig::default()
        }
    }

    fn city(config: &SimConfig) -> City {
        City::new(config).expect("valid config")
    }

    fn stream(city: &City, venue: &str) -> Vec<Advert> {
        city.adverts(venue).expect("known venue").collect()
    }

    fn bluetrace_uuid() -> ServiceUuid {
        ServiceUuid::parse(DEFAULT_BLUETRACE_SERVICE_UUID).expect("uuid")
    }

    /// Every RPI the ground truth's TEKs produce: RPI → (phone, interval, AEMK).
    fn rpi_map(truth: &GroundTruth) -> HashMap<Rpi, (u32, u32, Aemk)> {
        let mut map = HashMap::new();
        for phone in &truth.phones {
            for tek in &phone.teks {
                let (rpik, aemk) = Tek::from_hex(&tek.key_data).expect("hex TEK").keys();
                let first = tek.rolling_start_interval_number;
                for (i, rpi) in rpik
                    .cipher()
                    .derive(Enin(first), tek.rolling_period as usize)
                    .into_iter()
                    .enumerate()
                {
                    map.insert(rpi, (phone.id, first + i as u32, aemk));
                }
            }
        }
        map
    }

    /// Splits sorted advert times into visits: a gap longer than a minute separates two.
    fn runs(times: &[u64]) -> Vec<(u64, u64)> {
        let mut out: Vec<(u64, u64)> = Vec::new();
        for &t in times {
            match out.last_mut() {
                Some((_, last)) if t - *last <= 60_000 => *last = t,
                _ => out.push((t, t)),
            }
        }
        out
    }

    /// The same config and seed give identical streams and ground truth, whichever venue is
    /// taken first; another seed gives different ones.
    #[test]
    fn deterministic_from_config_and_seed() {
        let config = small(7);
        let (a, b) = (city(&config), city(&config));
        let a_streams: Vec<_> = ["shop", "souk", "bus"]
            .iter()
            .map(|v| stream(&a, v))
            .collect();
        let b_bus = stream(&b, "bus");
        let b_shop = stream(&b, "shop");
        assert_eq!(a_streams[2], b_bus);
        assert_eq!(a_streams[0], b_shop);
        assert_eq!(a.ground_truth(), b.ground_truth());
        assert!(a_streams.iter().all(|s| !s.is_empty()));

        let c = city(&small(8));
        assert_ne!(stream(&c, "shop"), a_streams[0]);
        assert_ne!(c.ground_truth(), a.ground_truth());
    }

    /// Every GAEN advert is a well-formed 0xFD6F beacon whose RPI is derived from one of the
    /// phone's ground-truth TEKs for the advert's interval (or the previous one within the
    /// rotation delay), and whose AEM decrypts to the phone's metadata.
    #[test]
    fn gaen_adverts_match_ground_truth_keys() {
        let config = small(3);
        let city = city(&config);
        let truth = city.ground_truth();
        let map = rpi_map(&truth);
        let jitter_ms = u64::from(config.rotation_jitter_s) * 1000;
        let mut gaen = 0;
        let mut lagging = 0;
        let mut days = BTreeSet::new();
        for venue in ["shop", "souk", "bus"] {
            for advert in stream(&city, venue) {
                match classify(&advert, &[bluetrace_uuid()]) {
                    Beacon::Gaen(beacon) => {
                        gaen += 1;
                        let (phone, k, aemk) = *map.get(&beacon.rpi).expect("RPI from a TEK");
                        let start = u64::from(k) * INTERVAL_MS;
                        assert!(
                            start <= advert.time_ms
                                && advert.time_ms < start + INTERVAL_MS + jitter_ms,
                            "RPI of interval {k} broadcast at {} ms",
                            advert.time_ms
                        );
                        lagging += usize::from(advert.time_ms >= start + INTERVAL_MS);
                        days.insert(k / INTERVALS_PER_DAY);
                        let truth_phone = &truth.phones[phone as usize];
                        assert_eq!(truth_phone.kind, PhoneKind::Gaen);
                        assert_eq!(
                            aemk.decrypt_metadata(&beacon.rpi, &beacon.aem),
                            Ok(Metadata::v1_0(truth_phone.tx_power_dbm))
                        );
                        assert_eq!(advert.tx_power, None);
                        assert_eq!(advert.address.0[0] >> 6, 0b01, "resolvable private address");
                    }
                    Beacon::BlueTrace => {
                        assert_eq!(advert.service_uuids, [bluetrace_uuid()]);
                        assert!(advert.tx_power.is_some());
                        let (company, chars) = &advert.manufacturer_data[0];
                        assert_eq!(*company, BLUETRACE_MANUFACTURER_ID);
                        assert_eq!(chars.len(), 3);
                        assert!(chars.iter().all(u8::is_ascii_alphanumeric));
                    }
                    other => panic!("simulated advert classified as {other:?}"),
                }
            }
        }
        assert!(gaen > 1000, "only {gaen} GAEN adverts");
        assert!(lagging > 0, "no advert carried the previous interval's RPI");
        assert_eq!(
            days.len(),
            2,
            "the window crosses midnight: two TEKs in use"
        );
    }

    /// The address and the RPI change together: an address is only ever seen with one RPI and
    /// an RPI with one address, and no RPI is broadcast for longer than an interval plus the
    /// rotation delay.
    #[test]
    fn address_and_rpi_rotate_together() {
        let config = small(11);
        let city = city(&config);
        let mut by_address: HashMap<DeviceAddress, Rpi> = HashMap::new();
        let mut by_rpi: HashMap<Rpi, (DeviceAddress, u64, u64)> = HashMap::new();
        for venue in ["shop", "souk", "bus"] {
            for advert in stream(&city, venue) {
                let Beacon::Gaen(beacon) = classify(&advert, &[]) else {
                    continue;
                };
                let rpi = *by_address.entry(advert.address).or_insert(beacon.rpi);
                assert_eq!(rpi, beacon.rpi, "a new RPI under an old address");
                let (address, first, last) = by_rpi.entry(beacon.rpi).or_insert((
                    advert.address,
                    advert.time_ms,
                    advert.time_ms,
                ));
                assert_eq!(*address, advert.address, "an old RPI under a new address");
                *first = (*first).min(advert.time_ms);
                *last = (*last).max(advert.time_ms);
            }
        }
        let longest = by_rpi
            .values()
            .map(|(_, f, l)| l - f)
            .max()
            .expect("adverts");
        assert!(longest < INTERVAL_MS + u64::from(config.rotation_jitter_s) * 1000);
        assert!(by_rpi.len() > 100);
    }

    /// Every ground-truth visit shows in its venue's stream as one run of adverts from the
    /// phone (GAEN phones found by RPI, BlueTrace phones by address), starting within a
    /// second of arrival and ending before departure; nothing else appears.
    #[test]
    fn streams_show_exactly_the_ground_truth_visits() {
        let config = small(5);
        let city = city(&config);
        let truth = city.ground_truth();
        let rpis = rpi_map(&truth);
        let pop = &city.population;
        let (start, end) = city.window_unix_s();
        let mut addresses = HashMap::new();
        for (i, phone) in pop.phones.iter().enumerate() {
            if phone.kind == PhoneKind::Bluetrace {
                for k in (start / INTERVAL_SECONDS) as u32 - 1..=(end / INTERVAL_SECONDS) as u32 {
                    addresses.insert(pop.address(i as u32, k), i as u32);
                }
            }
        }
        let mut visits_seen = 0;
        for venue in ["shop", "souk", "bus"] {
            let mut times: BTreeMap<u32, Vec<u64>> = BTreeMap::new();
            let adverts = stream(&city, venue);
            assert!(
                adverts.windows(2).all(|w| w[0].time_ms <= w[1].time_ms),
                "time order"
            );
            for advert in &adverts {
                let phone = match classify(advert, &[bluetrace_uuid()]) {
                    Beacon::Gaen(b) => rpis.get(&b.rpi).expect("known RPI").0,
                    _ => *addresses.get(&advert.address).expect("known address"),
                };
                times.entry(phone).or_default().push(advert.time_ms);
            }
            for phone in &truth.phones {
                let expected: Vec<&VisitTruth> =
                    phone.visits.iter().filter(|v| v.venue == venue).collect();
                let seen = runs(times.get(&phone.id).map_or(&[][..], Vec::as_slice));
                assert_eq!(seen.len(), expected.len(), "phone {} at {venue}", phone.id);
                for ((first, last), visit) in seen.iter().zip(expected) {
                    assert!(visit.arrive_unix_s * 1000 <= *first);
                    assert!(*first < visit.arrive_unix_s * 1000 + 1000);
                    assert!(*last < visit.leave_unix_s * 1000);
                    let interval = u64::from(config.advert_interval_ms);
                    assert!(*last + interval * 3 / 2 >= visit.leave_unix_s * 1000);
                }
                visits_seen += seen.len();
            }
        }
        let total: usize = truth.phones.iter().map(|p| p.visits.len()).sum();
        assert_eq!(visits_seen, total);
        assert_eq!(
            city.adverts("shop").map(|a| a.visits()).ok(),
            Some(
                truth
                    .phones
                    .iter()
                    .flat_map(|p| &p.visits)
                    .filter(|v| v.venue == "shop")
                    .count()
            )
        );
    }

    /// A phone is never at two venues at once (and travels between visits); visits lie in the
    /// window; some phones visit several venues.
    #[test]
    fn no_phone_is_in_two_places_at_once() {
        let truth = city(&small(9)).ground_truth();
        let mut multi_venue = 0;
        for phone in &truth.phones {
            for visit in &phone.visits {
                assert!(truth.start_unix_s <= visit.arrive_unix_s);
                assert!(visit.arrive_unix_s < visit.leave_unix_s);
                assert!(visit.leave_unix_s <= truth.end_unix_s);
            }
            for pair in phone.visits.windows(2) {
                assert!(pair[0].leave_unix_s + TRAVEL_S <= pair[1].arrive_unix_s);
            }
            let venues: BTreeSet<&str> = phone.visits.iter().map(|v| v.venue.as_str()).collect();
            multi_venue += usize::from(venues.len() > 1);
        }
        assert!(
            multi_venue > 10,
            "only {multi_venue} phones visited several venues"
        );
        assert_eq!(truth.arrivals_without_free_phone, 0);
    }

    /// RSSI stays within −100..−30 dBm, and visitors close to the gateway are heard louder
    /// than those far away.
    #[test]
    fn rssi_is_bounded_and_falls_with_distance() {
        let mut config = small(4);
        config.venues[0].min_distance_m = 0.1;
        config.venues[0].max_distance_m = 60.0;
        let city = city(&config);
        let adverts = stream(&city, "shop");
        assert!(
            adverts
                .iter()
                .all(|a| (RSSI_MIN_DBM..=RSSI_MAX_DBM).contains(&a.rssi))
        );
        assert!(adverts.iter().any(|a| a.rssi == RSSI_MAX_DBM));
        assert!(adverts.iter().any(|a| a.rssi == RSSI_MIN_DBM));
        let venue = &city.venues[0];
        // Mean RSSI per distance band, attributing adverts by their (unique) address.
        let pop = &city.population;
        let mut near = (0.0, 0.0);
        let mut far = (0.0, 0.0);
        let by_phone: HashMap<u32, f64> = venue
            .visits
            .iter()
            .map(|v| (v.phone, v.distance_m))
            .collect();
        let mut owner = HashMap::new();
        for &phone in by_phone.keys() {
            for k in (LATE / INTERVAL_SECONDS) as u32 - 1..=(LATE / INTERVAL_SECONDS) as u32 + 13 {
                owner.insert(pop.address(phone, k), phone);
            }
        }
        for advert in &adverts {
            let d = by_phone[&owner[&advert.address]];
            let band = if d < 2.0 {
                &mut near
            } else if d > 20.0 {
                &mut far
            } else {
                continue;
            };
            band.0 += f64::from(advert.rssi);
            band.1 += 1.0;
        }
        assert!(near.1 > 0.0 && far.1 > 0.0);
        assert!(near.0 / near.1 > far.0 / far.1 + 20.0);
    }

    /// Config problems are all reported at once, each naming what is wrong.
    #[test]
    fn config_validation_reports_every_problem() {
        let none = SimConfig {
            venues: vec![],
            hours: 0.0,
            bluetrace_share: 1.5,
            ..SimConfig::default()
        };
        assert_eq!(
            City::new(&none).err(),
            Some(SimError::InvalidConfig(vec![
                ConfigProblem::NoVenues,
                ConfigProblem::Hours(0.0),
                ConfigProblem::Share {
                    field: "bluetrace_share",
                    value: 1.5
                },
            ]))
        );
        let mut bad = SimConfig::default();
        bad.venues[1].arrivals_per_hour = -3.0;
        bad.venues[2].id = "supermarket-1".to_owned();
        bad.venues[2].mean_dwell_minutes = 0.0;
        bad.hours = -1.0;
        bad.phones = 0;
        bad.rotation_jitter_s = 600;
        bad.bluetrace_service_uuid = "not-a-uuid".to_owned();
        let message = City::new(&bad).expect_err("invalid").to_string();
        for needle in [
            "venue \"souk-1\": arrivals_per_hour -3",
            "venue id \"supermarket-1\" is used twice",
            "mean_dwell_minutes 0",
            "hours -1",
            "phones 0",
            "rotation_jitter_s 600",
            "\"not-a-uuid\" is not a UUID",
        ] {
            assert!(message.contains(needle), "{needle:?} not in {message:?}");
        }
    }

    /// Asking for a venue that is not configured is an error naming it and the known ones.
    #[test]
    fn unknown_venue_is_an_error() {
        let err = city(&small(1)).adverts("mall").expect_err("unknown venue");
        assert_eq!(
            err.to_string(),
            "no venue \"mall\" in the simulation config (venues: shop, souk, bus)"
        );
    }

    /// The config deserializes with every field defaulted, and rejects unknown fields.
    #[test]
    fn config_defaults_and_strictness() {
        let parsed: SimConfig = serde_json::from_str("{}").expect("empty config");
        assert_eq!(parsed, SimConfig::default());
        let parsed: SimConfig = serde_json::from_str(
            r#"{"seed": 9, "venues": [{"id": "a", "arrivals_per_hour": 10, "mean_dwell_minutes": 5}]}"#,
        )
        .expect("partial config");
        assert_eq!(parsed.seed, 9);
        assert_eq!(parsed.venues[0].path_loss, PathLoss::default());
        assert_eq!(parsed.venues[0].max_distance_m, 20.0);
        assert!(serde_json::from_str::<SimConfig>(r#"{"sead": 9}"#).is_err());
        assert_eq!(SimConfig::default().start_unix_s % INTERVAL_SECONDS, 0);
        City::new(&SimConfig::default()).expect("the default config is valid");
    }

    /// The ground truth survives JSON; GAEN phones carry a TEK per day of the window with the
    /// day's first interval as rolling start, BlueTrace phones none.
    #[test]
    fn ground_truth_round_trips_and_lists_teks() {
        let truth = city(&small(2)).ground_truth();
        let json = serde_json::to_string(&truth).expect("serialize");
        let back: GroundTruth = serde_json::from_str(&json).expect("parse");
        assert_eq!(back.phones.len(), truth.phones.len());
        assert_eq!(back.exposed_venue_hours(), truth.exposed_venue_hours());
        assert!(json.contains("\"kind\":\"bluetrace\""));
        for phone in &truth.phones {
            match phone.kind {
                PhoneKind::Gaen => {
                    assert_eq!(phone.teks.len(), 2);
                    for tek in &phone.teks {
                        assert_eq!(tek.rolling_start_interval_number % 144, 0);
                        assert_eq!(tek.rolling_period, 144);
                    }
                }
                PhoneKind::Bluetrace => assert!(phone.teks.is_empty()),
            }
        }
    }

    /// Exposed venue-hours: every hour an infected GAEN phone was at a venue, with the other
    /// phones whose visit overlaps its presence in that hour; infected BlueTrace phones and
    /// other venues do not count.
    #[test]
    fn exposed_venue_hours_count_co_present_phones() {
        let h = 1_748_858_400; // 10:00 UTC
        let visit = |venue: &str, from_min: u64, to_min: u64| VisitTruth {
            venue: venue.to_owned(),
            arrive_unix_s: h + from_min * 60,
            leave_unix_s: h + to_min * 60,
            mean_distance_m: 2.0,
        };
        let phone =
            |id: u32, kind: PhoneKind, infected: bool, visits: Vec<VisitTruth>| PhoneTruth {
                id,
                kind,
                infected,
                model: "m".to_owned(),
                tx_power_dbm: -10,
                teks: vec![],
                uid: None,
                visits,
            };
        use PhoneKind::{Bluetrace, Gaen};
        let truth = GroundTruth {
            seed: 0,
            start_unix_s: h,
            end_unix_s: h + 7200,
            venues: vec!["a".into(), "b".into()],
            arrivals_without_free_phone: 0,
            bluetrace_key: String::new(),
            phones: vec![
                phone(0, Gaen, true, vec![visit("a", 30, 80)]),
                phone(1, Bluetrace, false, vec![visit("a", 0, 40)]),
                phone(2, Gaen, false, vec![visit("a", 70, 90)]),
                phone(3, Gaen, false, vec![visit("a", 80, 100)]),
                phone(4, Gaen, false, vec![visit("b", 30, 80)]),
                phone(5, Bluetrace, true, vec![visit("b", 30, 80)]),
                phone(6, Gaen, false, vec![visit("a", 10, 20)]),
            ],
        };
        let exposed = |hour: u64, co: usize, co_gaen: usize| ExposedVenueHour {
            venue: "a".into(),
            hour_start_unix_s: hour,
            infected_phones: 1,
            co_present_phones: co,
            co_present_gaen_phones: co_gaen,
        };
        assert_eq!(
            truth.exposed_venue_hours(),
            [exposed(h, 1, 0), exposed(h + 3600, 1, 1)]
        );
    }

    /// Generation speed of the default city (run in release:
    /// With `bluetrace_reads`, BlueTrace phones (and only they) are read: a few seconds after
    /// arrival, then every `bluetrace_reread_s` + 0..10 s while present; each TempID decrypts
    /// with the ground truth's key to the phone's UID and is valid when read; the adverts are
    /// exactly those of the same city without reads.
    #[test]
    fn bluetrace_reads_follow_visits_and_decrypt_to_the_uid() {
        let mut config = small(8);
        config.bluetrace_reads = true;
        let with_reads = city(&config);
        let truth = with_reads.ground_truth();
        let key = TempIdKey::from_base64(&truth.bluetrace_key).expect("key");
        let uid_of: HashMap<String, &PhoneTruth> = truth
            .phones
            .iter()
            .filter_map(|p| Some((p.uid.clone()?, p)))
            .collect();
        assert!(
            truth
                .phones
                .iter()
                .all(|p| p.uid.is_some() == (p.kind == PhoneKind::Bluetrace))
        );
        let without = city(&small(8));
        let mut reads = 0;
        for venue in ["shop", "souk", "bus"] {
            let all = stream(&with_reads, venue);
            let adverts: Vec<Advert> = all
                .iter()
                .filter(|a| a.tempid_read.is_none())
                .cloned()
                .collect();
            assert_eq!(
                adverts,
                stream(&without, venue),
                "{venue}: adverts unchanged"
            );
            let mut last: HashMap<String, u64> = HashMap::new();
            for advert in all.iter().filter(|a| a.tempid_read.is_some()) {
                reads += 1;
                let read = advert.tempid_read.as_ref().expect("read");
                assert_eq!(read.org, "MAR");
                let d = key.decrypt(&read.tempid).expect("decrypts");
                let uid = d.uid.to_base64();
                let phone = uid_of.get(&uid).expect("a BlueTrace phone's UID");
                let t_s = advert.time_ms / 1000;
                assert!(
                    phone.visits.iter().any(|v| v.venue == venue
                        && v.arrive_unix_s <= t_s
                        && t_s < v.leave_unix_s),
                    "read during a visit"
                );
                assert!(i64::from(d.start) <= t_s as i64 && (t_s as i64) < i64::from(d.expiry));
                if let Some(prev) = last.insert(uid, advert.time_ms) {
                    let gap = advert.time_ms - prev;
                    assert!(
                        gap >= 100_000 && !(110_000..=300_000).contains(&gap),
                        "re-read after {gap} ms"
                    );
                }
            }
        }
        assert!(reads > 100, "{reads} reads");
    }

    /// BlueTrace venue-hours: cases per hour of their visits, contacts overlapping within the
    /// hour (a case co-present with another case counts as a case, not a contact).
    #[test]
    fn bluetrace_venue_hours_count_cases_and_contacts() {
        let h = 1_748_851_200u64; // an hour boundary
        let visit = |venue: &str, from_min: u64, to_min: u64| VisitTruth {
            venue: venue.into(),
            arrive_unix_s: h + from_min * 60,
            leave_unix_s: h + to_min * 60,
            mean_distance_m: 2.0,
        };
        let phone =
            |id: u32, kind: PhoneKind, infected: bool, visits: Vec<VisitTruth>| PhoneTruth {
                id,
                kind,
                infected,
                model: "m".to_owned(),
                tx_power_dbm: -10,
                teks: vec![],
                uid: (kind == PhoneKind::Bluetrace).then(|| format!("uid{id}")),
                visits,
            };
        use PhoneKind::{Bluetrace, Gaen};
        let truth = GroundTruth {
            seed: 0,
            start_unix_s: h,
            end_unix_s: h + 7200,
            venues: vec!["a".into()],
            arrivals_without_free_phone: 0,
            bluetrace_key: String::new(),
            phones: vec![
                phone(0, Bluetrace, true, vec![visit("a", 50, 70)]),
                phone(1, Bluetrace, false, vec![visit("a", 40, 55)]), // hour 0 only
                phone(2, Bluetrace, false, vec![visit("a", 65, 90)]), // hour 1 only
                phone(3, Gaen, false, vec![visit("a", 50, 70)]),      // not BlueTrace
                phone(4, Bluetrace, true, vec![visit("a", 68, 80)]),  // a second case
                phone(5, Bluetrace, false, vec![visit("a", 70, 75)]), // after case 0 left
            ],
        };
        let hours: Vec<(u64, usize, usize)> = truth
            .bluetrace_venue_hours()
            .iter()
            .map(|v| (v.hour_start_unix_s - h, v.cases, v.contacts))
            .collect();
        // Hour 0: case 0, contact 1. Hour 1: cases 0 and 4, contacts 2 and 5 (of case 4).
        assert_eq!(hours, [(0, 1, 1), (3600, 2, 2)]);
    }

    /// The ground truth's contacts are the overlapping visits of infected BlueTrace phones.
    #[test]
    fn bluetrace_contacts_are_overlapping_visits() {
        let truth = city(&SimConfig {
            infected_share: 0.2,
            ..small(9)
        })
        .ground_truth();
        let contacts = truth.bluetrace_contacts();
        assert!(!contacts.is_empty());
        for c in &contacts {
            let find = |uid: &str| {
                truth
                    .phones
                    .iter()
                    .find(|p| p.uid.as_deref() == Some(uid))
                    .expect("phone")
            };
            let (case, other) = (find(&c.case_uid), find(&c.contact_uid));
            assert!(case.infected && case.kind == PhoneKind::Bluetrace);
            assert_ne!(case.id, other.id);
            let overlap: u64 = case
                .visits
                .iter()
                .filter(|v| v.venue == c.venue)
                .flat_map(|cv| {
                    other
                        .visits
                        .iter()
                        .filter(|v| v.venue == c.venue)
                        .map(move |ov| {
                            ov.leave_unix_s
                                .min(cv.leave_unix_s)
                                .saturating_sub(ov.arrive_unix_s.max(cv.arrive_unix_s))
                        })
                })
                .sum();
            assert_eq!(overlap, c.overlap_s);
            assert!(overlap > 0);
        }
    }

    /// `cargo test --release --lib sim::tests::timing -- --ignored --nocapture`).
    #[test]
    #[ignore = "timing, for release builds"]
    fn timing() {
        let t = std::time::Instant::now();
        let city = city(&SimConfig::default());
        let truth = city.ground_truth();
        println!(
            "city: {:?}, {} visits, {} arrivals without a free phone",
            t.elapsed(),
            truth.phones.iter().map(|p| p.visits.len()).sum::<usize>(),
            truth.arrivals_without_free_phone
        );
        for venue in city.venue_ids() {
            let t = std::time::Instant::now();
            let n = city.adverts(venue).expect("venue").count();
            println!("{venue}: {n} adverts in {:?}", t.elapsed());
        }
    }
}
