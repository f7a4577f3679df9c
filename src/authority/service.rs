//! The store-backed commands' wiring: opening the store from the configuration (or
//! `--database`), the authority's key pair, the ingest daemon (`run`), the matching driver
//! (`match`, and the daemon's rematch with the per-day indexes it keeps: [`MatchCache`]) and
//! the venue exposure query (`exposures`).
//!
//! Decisions live in [`ingest`](super::ingest), [`crate::matching`] and
//! [`store`](super::store); this file resolves settings and connects them.

use super::bluetrace::HoursWatch;
use super::config::{self, AuthorityConfig, Database, MatchingSettings};
use super::ingest::{self, IngestLimits, IngestReport};
use super::pg::PgStore;
use super::registry::RegistryError;
use super::store::{
    DayCount, DynStore, ExposureFilter, ExposureRow, Lease, SightingSelection, SqliteStore, Store,
    StoreError, VenueHourRow,
};
use crate::crypto::{Enin, INTERVALS_PER_DAY};
use crate::exit::Exit;
use crate::gateway::publisher::MqttSettings;
use crate::matching::{
    self, DayCache, DayPart, IndexError, MAX_SPAN_INTERVALS, MatchKey, MatchStats, RiskConfig,
    SightingTable,
};
use crate::output::{ListFormat, Table};
use crate::seal::{KeyFileError, KeyPair};
use std::collections::{BTreeMap, BTreeSet};
use std::io::Write;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info};

/// A store-backed command failed.
#[derive(Debug, thiserror::Error)]
pub enum ServiceError {
    /// The configuration is invalid (all problems listed).
    #[error("invalid configuration:\n{0}")]
    Config(config::ConfigErrors),
    /// The store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// A registry command failed.
    #[error(transparent)]
    Registry(#[from] RegistryError),
    /// The key file is unusable.
    #[error(transparent)]
    Key(#[from] KeyFileError),
    /// A file the configuration names cannot be read.
    #[error(transparent)]
    File(#[from] crate::gateway::publisher::SettingsFileError),
    /// A time argument is not understood.
    #[error(
        "{option} {value:?}: expected a date (2026-11-29) or a date and time (2026-11-29T14:00, optionally with an offset)"
    )]
    Time {
        /// The option.
        option: &'static str,
        /// The value.
        value: String,
    },
    /// Ingest stopped on an error.
    #[error(transparent)]
    Ingest(#[from] ingest::IngestError),
    /// The sightings to match cannot be indexed.
    #[error("cannot index the sightings to match")]
    Index(#[from] IndexError),
    /// The risk model settings are inconsistent.
    #[error("matching settings: {0}")]
    Risk(String),
    /// The async runtime could not start.
    #[error("cannot start the async runtime")]
    Runtime(#[source] std::io::Error),
    /// A blocking task failed (a bug).
    #[error("internal task failed: {0}")]
    Internal(String),
    /// Writing the result failed.
    #[error("cannot write output")]
    Output(#[source] std::io::Error),
}

impl ServiceError {
    /// The sysexits code.
    pub fn exit(&self) -> Exit {
        match self {
            ServiceError::Config(_) | ServiceError::Risk(_) => Exit::Config,
            ServiceError::Store(StoreError::Registry(_)) => Exit::DataErr,
            ServiceError::Store(StoreError::Incompatible { .. }) => Exit::Config,
            ServiceError::Store(_) => Exit::IoErr,
            ServiceError::Registry(e) => e.exit(),
            ServiceError::Key(KeyFileError::Exists(_) | KeyFileError::Write { .. }) => {
                Exit::CantCreat
            }
            ServiceError::Key(_) => Exit::Config,
            ServiceError::File(_) => Exit::NoInput,
            ServiceError::Time { .. } => Exit::Usage,
            ServiceError::Ingest(_) | ServiceError::Index(_) => Exit::Software,
            ServiceError::Runtime(_) | ServiceError::Internal(_) => Exit::Software,
            ServiceError::Output(_) => Exit::IoErr,
        }
    }
}

/// The configuration a store-backed command runs with: the file when it exists (any problem
/// in it is an error), else — only when `--database` is given — the built-in defaults.
pub fn load_config(
    config_path: &Path,
    database: Option<&str>,
) -> Result<(AuthorityConfig, Database), ServiceError> {
    let env = config::process_env();
    let config = if config_path.exists() || database.is_none() {
        config::load(config_path, &env).map_err(ServiceError::Config)?
    } else {
        // No configuration file, but an explicit store: run on the built-in defaults (every
        // key has one), still applying environment overrides.
        config::defaults(&env).map_err(ServiceError::Config)?
    };
    let db = match database {
        // A relative `--database` path is relative to the working directory.
        Some(value) => Database::parse(value, Path::new("")).map_err(|message| {
            ServiceError::Config(crate::config_schema::ConfigErrors {
                problems: vec![crate::config_schema::ConfigProblem {
                    source: "--database".to_owned(),
                    key: String::new(),
                    message,
                }],
            })
        })?,
        None => config.authority.database.clone(),
    };
    Ok((config, db))
}

/// Opens the store: an SQLite file (created with its schema if needed) or a PostgreSQL
/// database (connected; the schema created or migrated). A migration is logged.
pub fn open_store(database: &Database) -> Result<DynStore, ServiceError> {
    let store: DynStore = match database {
        Database::Sqlite(path) => Box::new(SqliteStore::open(path)?),
        Database::Postgres(url) => Box::new(PgStore::connect(url)?),
    };
    if let Some(version) = store.migrated_from() {
        info!(
            %database,
            from = version,
            to = super::store::SCHEMA_VERSION,
            "store schema migrated"
        );
    }
    Ok(store)
}

/// The risk model of the `[matching]` settings.
pub fn risk_config(m: &MatchingSettings) -> RiskConfig {
    let defaults = RiskConfig::default();
    RiskConfig {
        tolerance_intervals: m.tolerance_intervals,
        max_rpi_run_minutes: m.max_rpi_run_minutes,
        max_window_minutes: m.max_window_minutes,
        attenuation_thresholds_db: m.attenuation_thresholds_db,
        attenuation_weights: m.attenuation_weights,
        report_type_weights: matching::ReportTypeWeights {
            confirmed_test: m.report_type_weights.confirmed_test,
            confirmed_clinical_diagnosis: m.report_type_weights.confirmed_clinical_diagnosis,
            self_report: m.report_type_weights.self_report,
            recursive: m.report_type_weights.recursive,
        },
        infectiousness_weights: matching::InfectiousnessWeights {
            standard: m.infectiousness_weights.standard,
            high: m.infectiousness_weights.high,
        },
        default_report_type: m.default_report_type,
        default_infectiousness: match m.default_infectiousness {
            config::Infectiousness::Standard => matching::Infectiousness::Standard,
            config::Infectiousness::High => matching::Infectiousness::High,
        },
        minimum_window_score: m.minimum_window_score,
        ..defaults
    }
}

/// What a match run did.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct MatchSummary {
    /// Days recomputed.
    pub days: usize,
    /// Most keys matched in one pass (a pass covers consecutive days that fit the cache).
    pub keys: usize,
    /// Sightings read from the store (days already in the cache are not read again).
    pub sightings: usize,
    /// Exposure events stored.
    pub events: usize,
    /// Venue-hours with exposure.
    pub venue_hours: usize,
    /// The core's counters of the last pass.
    pub stats: MatchStats,
}

const DAY_S: i64 = 86_400;
/// Intervals per UTC day, signed (day arithmetic below goes before the epoch harmlessly).
const DAY_INTERVALS: i64 = INTERVALS_PER_DAY as i64;
/// Memory a sighting takes in a day index (row, ~7 minutes of RSSI, index): plans passes
/// before a day is read (docs/performance.md, M3: 137 bytes at 1e8 sightings).
const EST_BYTES_PER_SIGHTING: u64 = 150;

/// The UTC day of an interval.
fn day_of(interval: i64) -> i64 {
    interval.div_euclid(DAY_INTERVALS)
}

/// Where a key can be matched, in intervals: its own ± the tolerance.
#[derive(Clone, Copy, Debug)]
struct KeyReach {
    lo: i64,
    hi: i64,
}

impl KeyReach {
    fn new(start: u32, period: u32, tolerance: i64) -> Self {
        let start = i64::from(start);
        Self {
            lo: start - tolerance,
            hi: start + i64::from(period.max(1)) - 1 + tolerance,
        }
    }

    /// The days whose sightings the key is looked up in: a window holds minutes up to
    /// `MAX_SPAN_INTERVALS - 1` intervals after its start, so a window of the day before the
    /// reach can hold a minute inside it.
    fn needed(&self) -> (i64, i64) {
        (
            day_of(self.lo - i64::from(MAX_SPAN_INTERVALS - 1)),
            day_of(self.hi),
        )
    }

    /// The days whose stored results depend on the key: those it can have events in, and those
    /// whose co-presence counts leave out the sightings it matches (which can be heard up to
    /// the day after the last day it is looked up in).
    fn affects(&self) -> std::ops::RangeInclusive<i64> {
        let (lo, hi) = self.needed();
        lo..=hi + 1
    }
}

/// The days whose results depend on batches stored with windows starting at `windows`: the
/// hours their minutes fall in (co-presence), and for every key that can match them the days
/// from the earliest exposure window a new minute can join to the end of the key's reach (a
/// new minute can move every later window of that key at that venue, and the replay cut).
fn batch_days(
    windows: &[u32],
    reaches: &[KeyReach],
    max_window_minutes: u32,
    dirty: &mut BTreeSet<i64>,
) {
    let mut by_day: BTreeMap<i64, (i64, i64)> = BTreeMap::new();
    for &w in windows {
        let w = i64::from(w);
        let span = by_day.entry(day_of(w)).or_insert((w, w));
        *span = (span.0.min(w), span.1.max(w));
    }
    for (first, last) in by_day.into_values() {
        let last_heard = last + i64::from(MAX_SPAN_INTERVALS - 1);
        dirty.extend(day_of(first)..=day_of(last_heard));
        let earliest = (first * 10 - i64::from(max_window_minutes.max(1)) + 1).div_euclid(1440);
        let latest = reaches
            .iter()
            .filter(|r| r.lo <= last_heard && r.hi >= first)
            .map(|r| day_of(r.hi))
            .max();
        if let Some(latest) = latest {
            dirty.extend(earliest..=latest);
        }
    }
}

/// The sighting indexes kept between match runs: each UTC day's sightings read from the store
/// once, indexed ([`matching::DayCache`]), extended with the sightings stored since, and
/// evicted (least recently used first) beyond `matching.index_cache_mib`. The daemon keeps one
/// for its life; `match` uses a fresh one per run.
///
/// A cached day always holds exactly the day's sightings stored up to the cache's watermark
/// (a sighting row id): before each run the sightings stored since are added to the days
/// cached, and a day whose batch and sighting counts no longer agree with the store's (a
/// purge, a deletion by another process) is dropped, to be read again when needed.
#[derive(Debug)]
pub struct MatchCache {
    days: DayCache,
    watermark: i64,
}

impl MatchCache {
    /// An empty cache of at most `budget_bytes` (beyond what one pass needs).
    pub fn new(budget_bytes: usize) -> Self {
        Self {
            days: DayCache::new(budget_bytes),
            watermark: 0,
        }
    }

    /// An empty cache of the configured size.
    pub fn from_settings(settings: &MatchingSettings) -> Self {
        Self::new(usize::try_from(settings.index_cache_mib << 20).unwrap_or(usize::MAX))
    }

    /// Days cached.
    pub fn days(&self) -> usize {
        self.days.len()
    }

    /// Parts a cached day (days since the Unix epoch) is made of.
    pub fn parts(&self, day: u32) -> Option<usize> {
        self.days.parts(day)
    }

    /// Bytes of memory the cached days hold.
    pub fn memory_bytes(&self) -> usize {
        self.days.memory_bytes()
    }

    /// Forgets the days with windows starting before `before` (after a retention purge).
    pub fn forget_before(&mut self, before: Enin) {
        self.days
            .retain(|day| u64::from(day) * u64::from(INTERVALS_PER_DAY) >= u64::from(before.0));
    }

    /// Forgets everything.
    pub fn clear(&mut self) {
        self.days.clear();
        self.watermark = 0;
    }

    /// Brings the cached days up to the store's current watermark (see the type's
    /// documentation); returns the sightings read.
    fn refresh(
        &mut self,
        store: &dyn Store,
        counts: &BTreeMap<u32, DayCount>,
    ) -> Result<u64, ServiceError> {
        let upto = store.sighting_watermark()?;
        if upto < self.watermark {
            // Every sighting was deleted and row ids started again.
            self.days.clear();
        }
        let mut read = 0;
        if !self.days.is_empty() && upto > self.watermark {
            let days = &self.days;
            let mut fresh: BTreeMap<u32, (SightingTable, u64, i64)> = BTreeMap::new();
            read = store.read_sightings(
                SightingSelection::StoredBetween {
                    after: self.watermark,
                    upto,
                },
                &mut |row| {
                    let day = row.header.window_start.0 / INTERVALS_PER_DAY;
                    if days.contains(day) {
                        let (table, batches, last) = fresh.entry(day).or_default();
                        // A batch's sightings are stored together, in one transaction.
                        if *last != row.batch {
                            (*batches, *last) = (*batches + 1, row.batch);
                        }
                        table.push(row.header, row.minutes());
                    }
                },
            )?;
            for (day, (table, batches, _)) in fresh {
                self.days.append(day, table, batches)?;
            }
        }
        self.watermark = upto;
        let stale: Vec<u32> = self
            .days
            .days()
            .filter(|day| {
                counts.get(day).map(|c| (c.batches, c.sightings)) != self.days.counts(*day)
            })
            .collect();
        for day in stale {
            tracing::debug!(day, "cached sightings differ from the store's: read again");
            self.days.remove(day);
        }
        Ok(read)
    }
}

/// Reads `days` whole (sightings stored up to row `upto`) into `cache`: reading on this thread
/// while another indexes the day read before (on 2 cores, SQLite decoding and index building
/// overlap). Returns the sightings read.
pub fn load_days(
    store: &dyn Store,
    cache: &mut DayCache,
    days: &[u32],
    upto: i64,
) -> Result<u64, ServiceError> {
    std::thread::scope(|scope| {
        // One day in flight: memory stays at the cache plus about two days.
        let (tx, rx) = std::sync::mpsc::sync_channel::<(SightingTable, u32, u64)>(0);
        let builder = scope.spawn(move || {
            rx.into_iter()
                .map(|(table, day, batches)| (DayPart::build(day, table), batches))
                .collect::<Vec<_>>()
        });
        let mut read = Ok(0u64);
        for &day in days {
            match read_day(store, day, upto) {
                Ok((table, batches)) => {
                    read = read.map(|n| n + table.len() as u64);
                    if tx.send((table, day, batches)).is_err() {
                        break;
                    }
                }
                Err(e) => {
                    read = Err(e);
                    break;
                }
            }
        }
        drop(tx);
        let built = builder
            .join()
            .unwrap_or_else(|panic| std::panic::resume_unwind(panic));
        for (part, batches) in built {
            cache.insert(part?, batches);
        }
        read
    })
}

/// One UTC day's sightings stored up to row `upto`, and the number of batches they are from.
fn read_day(store: &dyn Store, day: u32, upto: i64) -> Result<(SightingTable, u64), ServiceError> {
    let mut table = SightingTable::new();
    let (mut batches, mut last) = (0u64, 0i64);
    let first = day.saturating_mul(INTERVALS_PER_DAY);
    store.read_sightings(
        SightingSelection::Windows {
            from: Enin(first),
            to: Enin(first.saturating_add(INTERVALS_PER_DAY)),
            upto,
        },
        &mut |row| {
            if last != row.batch {
                (batches, last) = (batches + 1, row.batch);
            }
            table.push(row.header, row.minutes());
        },
    )?;
    Ok((table, batches))
}

/// Matches what changed since the last run (or, with `full`, everything) and replaces the
/// stored exposure results of the affected days, with a fresh [`MatchCache`] of the default
/// size.
pub fn match_store(
    store: &mut dyn Store,
    risk: &RiskConfig,
    full: bool,
) -> Result<MatchSummary, ServiceError> {
    match_store_with_progress(store, risk, full, &mut |_, _, _| {})
}

/// [`match_store`], calling `progress(done, total, day_start_unix_s)` as each day's results
/// are stored (the CLI prints it when stderr is a terminal).
pub fn match_store_with_progress(
    store: &mut dyn Store,
    risk: &RiskConfig,
    full: bool,
    progress: &mut dyn FnMut(usize, usize, i64),
) -> Result<MatchSummary, ServiceError> {
    let mut cache = MatchCache::new((config::DEFAULT_INDEX_CACHE_MIB << 20) as usize);
    match_store_cached(store, risk, full, &mut cache, progress)
}

/// Matches what changed since the last run (or, with `full`, everything) and replaces the
/// stored exposure results of the affected days, using and updating `cache`.
///
/// The unit of work is a UTC day. A day is *dirty* when its results can depend on a key added
/// or revised since the last run (the days the key is looked up in, and the next one: a
/// window there can hold minutes past midnight), or on a batch stored since (the days of its
/// minutes, and for every key that can match them, the days from the earliest exposure window
/// a new minute can join to the end of the key's reach: a new minute can move all later
/// windows of that key at that venue). Dirty days are matched in passes of consecutive days
/// whose sightings fit the cache: a pass indexes every day its keys can be looked up in (from
/// the cache; missing days are read whole from the store) and matches, once, every key whose
/// results involve one of its days. The results starting in those days replace the stored
/// ones. An event depends only on its key's sightings, a venue-hour only on the keys and
/// sightings of its hour, and a day's sightings are always looked up whole with every key
/// that can reach them, so this gives exactly what a full run gives (tests compare the two,
/// with and without a cache kept across runs); determinism holds for a given store.
pub fn match_store_cached(
    store: &mut dyn Store,
    risk: &RiskConfig,
    full: bool,
    cache: &mut MatchCache,
    progress: &mut dyn FnMut(usize, usize, i64),
) -> Result<MatchSummary, ServiceError> {
    let changes = store.changes_since_match()?;
    let keys = store.keys()?;
    let tolerance = i64::from(risk.tolerance_intervals);
    let reaches: Vec<KeyReach> = keys
        .iter()
        .map(|k| KeyReach::new(k.key.rolling_start.0, k.key.rolling_period.get(), tolerance))
        .collect();
    let mut dirty = BTreeSet::new();
    if full {
        store.replace_exposures(&[], &[])?;
        for r in &reaches {
            dirty.extend(r.affects());
        }
    } else {
        for &(start, period) in &changes.key_ranges {
            dirty.extend(KeyReach::new(start, period, tolerance).affects());
        }
        batch_days(
            &changes.windows,
            &reaches,
            risk.max_window_minutes,
            &mut dirty,
        );
    }

    let counts: BTreeMap<u32, DayCount> = store
        .day_counts()?
        .into_iter()
        .map(|c| (c.day, c))
        .collect();
    let read = match cache.refresh(store, &counts) {
        Ok(read) => read as usize,
        Err(e) => {
            // A refresh cut short may have extended some days and not others.
            cache.clear();
            return Err(e);
        }
    };
    let mut summary = MatchSummary {
        sightings: read,
        ..MatchSummary::default()
    };
    let upto = cache.watermark;
    let with_sightings = |lo: i64, hi: i64| -> Vec<u32> {
        let lo = u32::try_from(lo.max(0)).unwrap_or(u32::MAX);
        let hi = u32::try_from(hi.max(-1)).unwrap_or(u32::MAX);
        if hi < lo {
            return Vec::new();
        }
        counts.range(lo..=hi).map(|(&day, _)| day).collect()
    };
    let estimate = |cache: &MatchCache, days: &[u32]| -> u64 {
        days.iter()
            .map(|&day| match cache.days.day_bytes(day) {
                Some(bytes) => bytes as u64,
                None => counts
                    .get(&day)
                    .map_or(0, |c| c.sightings * EST_BYTES_PER_SIGHTING),
            })
            .sum()
    };
    // The days a dirty day's keys are looked up in, as one range (None: no key involves it).
    let needed = |day: i64| -> Option<(i64, i64)> {
        reaches
            .iter()
            .filter(|r| r.affects().contains(&day))
            .map(KeyReach::needed)
            .reduce(|a, b| (a.0.min(b.0), a.1.max(b.1)))
    };

    let dirty: Vec<i64> = dirty.into_iter().collect();
    let budget = cache.days.budget_bytes() as u64;
    let (total, mut done, mut next) = (dirty.len(), 0, 0);
    while next < dirty.len() {
        // A pass: consecutive dirty days while their sightings fit the budget (at least one).
        let mut pass = BTreeSet::from([dirty[next]]);
        let mut range = needed(dirty[next]);
        next += 1;
        while let Some(&day) = dirty.get(next) {
            let (grown, apart) = match (range, needed(day)) {
                (Some(a), Some(b)) => (Some((a.0.min(b.0), a.1.max(b.1))), b.0 > a.1 + 1),
                (a, b) => (a.or(b), false),
            };
            // Days whose keys reach disjoint days go to separate passes: one pass would index
            // the days between too.
            let fits =
                grown.is_none_or(|(lo, hi)| estimate(cache, &with_sightings(lo, hi)) <= budget);
            if apart || !fits {
                break;
            }
            (range, next) = (grown, next + 1);
            pass.insert(day);
        }

        let pass_keys: Vec<MatchKey> = keys
            .iter()
            .zip(&reaches)
            .filter(|(_, r)| pass.range(r.affects()).next().is_some())
            .map(|(k, _)| MatchKey {
                id: k.id,
                key: k.key.clone(),
            })
            .collect();
        let report = match range {
            Some((lo, hi)) if !pass_keys.is_empty() => {
                let days = with_sightings(lo, hi);
                let missing: Vec<u32> = days
                    .iter()
                    .copied()
                    .filter(|&d| !cache.days.contains(d))
                    .collect();
                let keep: BTreeSet<u32> = days.iter().copied().collect();
                let reserve = estimate(cache, &missing) as usize;
                cache.days.evict(&keep, reserve);
                summary.sightings += load_days(store, &mut cache.days, &missing, upto)? as usize;
                let index = cache.days.index(days.iter().copied())?;
                index.match_keys(&pass_keys, risk, matching::default_threads())
            }
            _ => matching::MatchReport::default(),
        };
        for &day in &pass {
            progress(done, total, day * DAY_S);
            done += 1;
            let (day_from, day_to) = (day * DAY_S, (day + 1) * DAY_S);
            let events: Vec<ExposureRow> = report
                .events
                .iter()
                .filter(|e| (day_from..day_to).contains(&e.start_unix_s))
                .map(|e| ExposureRow {
                    key_id: e.key_id,
                    venue: e.venue,
                    start_s: e.start_unix_s,
                    end_s: e.end_unix_s,
                    score: e.score,
                    min_attenuation_db: e.min_attenuation_db,
                    typical_attenuation_db: e.typical_attenuation_db,
                    minutes_by_bucket: e.minutes_by_bucket,
                    report_type: e.report_type.to_i32(),
                })
                .collect();
            let hours: Vec<VenueHourRow> = report
                .venue_hours
                .iter()
                .filter(|h| (day_from..day_to).contains(&h.hour_start_unix_s))
                .map(|h| VenueHourRow {
                    venue: h.venue,
                    hour_start_s: h.hour_start_unix_s,
                    exposure_events: h.exposure_events,
                    infectious_keys: h.infectious_keys,
                    exposure_minutes: h.exposure_minutes,
                    max_score: h.max_score,
                    total_score: h.total_score,
                    co_present: h.co_present_visitors,
                })
                .collect();
            store.replace_exposures_between(day_from, day_to, &events, &hours)?;
            summary.events += events.len();
            summary.venue_hours += hours.len();
        }
        summary.days += pass.len();
        summary.keys = summary.keys.max(pass_keys.len());
        summary.stats = report.stats;
    }
    cache.days.evict(&BTreeSet::new(), 0);
    store.set_matched(changes.watermark)?;
    Ok(summary)
}

/// A progress printer for long matches: one line per day on stderr, only when stderr is a
/// terminal (logs and pipes stay clean).
pub fn terminal_progress() -> impl FnMut(usize, usize, i64) {
    let tty = std::io::IsTerminal::is_terminal(&std::io::stderr());
    move |done, total, day| {
        if tty {
            eprint!(
                "\rmatching day {} ({}/{})   ",
                crate::output::iso_utc(day.max(0) as u64)
                    .get(..10)
                    .unwrap_or(""),
                done + 1,
                total
            );
            if done + 1 == total {
                eprintln!();
            }
        }
    }
}

/// Parses a `--from`/`--to` time in the operator's time zone.
pub fn parse_time(
    option: &'static str,
    value: &str,
    tz: &jiff::tz::TimeZone,
) -> Result<i64, ServiceError> {
    let bad = || ServiceError::Time {
        option,
        value: value.to_owned(),
    };
    if let Ok(ts) = value.parse::<jiff::Timestamp>() {
        return Ok(ts.as_second());
    }
    let datetime = value
        .parse::<jiff::civil::DateTime>()
        .or_else(|_| {
            value
                .parse::<jiff::civil::Date>()
                .map(|d| d.to_datetime(jiff::civil::Time::midnight()))
        })
        .map_err(|_| bad())?;
    Ok(tz.to_timestamp(datetime).map_err(|_| bad())?.as_second())
}

/// `unix_s` in the operator's time zone, to the minute (`2026-11-29T14:00+01:00`).
pub(crate) fn local(unix_s: i64, tz: &jiff::tz::TimeZone) -> String {
    jiff::Timestamp::from_second(unix_s)
        .map(|ts| {
            ts.to_zoned_datetime(tz.clone())
                .strftime("%Y-%m-%dT%H:%M%:z")
                .to_string()
        })
        .unwrap_or_else(|_| unix_s.to_string())
}

/// `exposures`: venue-hours where an infectious key or a BlueTrace case was present. The
/// BlueTrace columns come last, so the GAEN columns keep their places.
pub fn exposures(
    store: &dyn Store,
    filter: &ExposureFilter,
    tz: &jiff::tz::TimeZone,
    format: ListFormat,
    out: &mut dyn Write,
) -> Result<(), ServiceError> {
    let rows = store.venue_hours(filter)?;
    let mut table = Table::new([
        "hour",
        "venue",
        "kind",
        "events",
        "infectious_keys",
        "exposure_min",
        "max_score",
        "total_score",
        "co_present",
        "bt_cases",
        "bt_contacts",
    ]);
    let mut json = Vec::new();
    for r in &rows {
        let hour = local(r.hour_start_s, tz);
        table.row([
            hour.clone(),
            r.venue.clone(),
            r.kind.clone(),
            r.exposure_events.to_string(),
            r.infectious_keys.to_string(),
            r.exposure_minutes.to_string(),
            format!("{:.0}", r.max_score),
            format!("{:.0}", r.total_score),
            r.co_present.to_string(),
            r.bt_cases.to_string(),
            r.bt_contacts.to_string(),
        ]);
        json.push(serde_json::json!({
            "hour": hour,
            "hour_start_unix_s": r.hour_start_s,
            "venue": r.venue,
            "kind": r.kind,
            "exposure_events": r.exposure_events,
            "infectious_keys": r.infectious_keys,
            "exposure_minutes": r.exposure_minutes,
            "max_score": r.max_score,
            "total_score": r.total_score,
            "co_present_visitors": r.co_present,
            "bt_cases": r.bt_cases,
            "bt_contacts": r.bt_contacts,
        }));
    }
    crate::output::write_list(&table, &serde_json::Value::from(json), format, out)
        .map_err(ServiceError::Output)
}

/// `keygen`: a new authority key pair; returns it so the caller prints the public key.
pub fn keygen(path: &Path) -> Result<KeyPair, ServiceError> {
    let keys = KeyPair::generate();
    keys.save(path)?;
    Ok(keys)
}

/// The broker settings of the configuration (reads TLS and password files).
pub fn mqtt_settings(config: &AuthorityConfig) -> Result<MqttSettings, ServiceError> {
    let m = &config.mqtt;
    let tls = crate::gateway::publisher::load_tls(m.tls.as_ref()).map_err(ServiceError::from)?;
    let credentials =
        crate::gateway::publisher::load_credentials(m.username.as_ref(), m.password.as_ref())
            .map_err(ServiceError::from)?;
    Ok(MqttSettings {
        host: m.host.clone(),
        port: m.port,
        client_id: m.client_id.clone(),
        tls,
        credentials,
        keep_alive: m.keep_alive,
        max_packet_bytes: config.ingest.max_batch_bytes + 1024,
    })
}

/// `run`: ingest until SIGTERM/SIGINT; purges by retention hourly and re-matches after new
/// batches (at most once a minute).
pub fn run(config: &AuthorityConfig, database: &Database) -> Result<IngestReport, ServiceError> {
    crate::process::init_logging(config.log.level.as_str(), config.log.format);
    let keys = KeyPair::load(&config.authority.private_key)?;
    let mqtt = mqtt_settings(config)?;
    let store = Arc::new(Mutex::new(open_store(database)?));
    let limits = IngestLimits {
        max_future: config.ingest.max_future,
        retention: config.retention.sightings,
    };
    let risk = risk_config(&config.matching);
    let cache = MatchCache::from_settings(&config.matching);
    let retention = config.retention;
    let bluetrace = config.bluetrace.clone();
    let share_group = config.mqtt.share_group.clone();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .map_err(ServiceError::Runtime)?;
    runtime.block_on(async move {
        let shutdown = CancellationToken::new();
        let signals = tokio::spawn(crate::process::watch_signals(shutdown.clone(), None));
        let housekeeping = tokio::spawn(housekeeping(
            Arc::clone(&store),
            risk,
            retention,
            bluetrace,
            cache,
            shutdown.clone(),
        ));
        info!(%database, "authority starting");
        // Ready once the store and key are open: queries work, and ingest connects (and
        // reconnects) to the broker on its own.
        crate::notify::notify("READY=1\nSTATUS=ingesting batches");
        let report = ingest::run(&mqtt, &share_group, keys, store, limits, shutdown.clone()).await;
        crate::notify::notify("STOPPING=1");
        shutdown.cancel();
        signals.abort();
        let _ = housekeeping.await;
        let report = report?;
        info!(
            stored = report.stored,
            duplicates = report.duplicates,
            quarantined = report.quarantined,
            store_failures = report.store_failures,
            store_refused = report.store_refused,
            "authority stopped"
        );
        Ok(report)
    })
}

/// Runs `job` on `store` while this worker holds `lease` (taken by the caller), and gives the
/// lease back however `job` ends — with a result, an error, or a panic (re-raised once the lease
/// is back): a lease left held would stop every worker's housekeeping until this one restarts.
fn with_lease<T, E: From<StoreError>>(
    store: &mut (dyn Store + Send),
    lease: Lease,
    job: impl FnOnce(&mut (dyn Store + Send)) -> Result<T, E>,
) -> Result<T, E> {
    let outcome = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| job(&mut *store)));
    let released = store.release_lease(lease);
    match outcome {
        Ok(result) => {
            let value = result?;
            released?;
            Ok(value)
        }
        Err(panic) => std::panic::resume_unwind(panic),
    }
}

/// Purges by retention hourly and re-matches after new batches, at most once a minute (GAEN,
/// then the BlueTrace venue-hours when new TempID sightings fall in a case's span:
/// [`HoursWatch`]). The match cache lives here, between runs: each run only reads the
/// sightings stored since the last one (and days evicted or purged since).
async fn housekeeping(
    store: Arc<Mutex<DynStore>>,
    risk: RiskConfig,
    retention: config::RetentionSettings,
    bluetrace: config::BluetraceSettings,
    cache: MatchCache,
    shutdown: CancellationToken,
) {
    // Moved into each blocking run and back, like the cache.
    let mut watch = Some(HoursWatch::new());
    let mut tick = tokio::time::interval(Duration::from_secs(60));
    let mut matched_batches = None;
    let mut minutes = 0u64;
    let budget = cache.days.budget_bytes();
    // Moved into each blocking run and back; lost (and rebuilt) only if a run panics.
    let mut cache = Some(cache);
    loop {
        tokio::select! {
            () = shutdown.cancelled() => break,
            _ = tick.tick() => {}
        }
        let (store, risk) = (Arc::clone(&store), risk.clone());
        let purge = minutes.is_multiple_of(60);
        minutes += 1;
        let last = matched_batches;
        let mut owned = cache.take().unwrap_or_else(|| MatchCache::new(budget));
        let mut owned_watch = watch.take().unwrap_or_default();
        let bluetrace = bluetrace.clone();
        let result = tokio::task::spawn_blocking(move || {
            let mut run = || -> Result<Option<u64>, ServiceError> {
                let mut store = store
                    .lock()
                    .unwrap_or_else(std::sync::PoisonError::into_inner);
                // Today's and tomorrow's partitions exist before their first batch.
                let now = std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map_or(0, |d| d.as_secs() as i64);
                let today = now / 86_400;
                store.prepare_days(today..=today + 1)?;
                if purge {
                    let sightings_before = now - retention.sightings.as_secs() as i64;
                    if store.try_lease(Lease::Purge)? {
                        let purged = with_lease(&mut **store, Lease::Purge, |store| {
                            store.purge(sightings_before, now - retention.keys.as_secs() as i64)
                        })?;
                        info!(
                            batches = purged.batches,
                            sightings = purged.sightings,
                            tempid_sightings = purged.tempid_sightings,
                            keys = purged.keys,
                            bluetrace_cases = purged.bluetrace_cases,
                            contact_queries = purged.contact_queries,
                            case_encounters = purged.case_encounters,
                            "retention purge"
                        );
                    } else {
                        debug!("retention purge left to the worker doing it");
                    }
                    owned.forget_before(Enin((sightings_before.max(0) / 600) as u32));
                }
                let batches = store.batch_count()?;
                if last == Some(batches) {
                    return Ok(Some(batches));
                }
                // Another worker sharing the store may be matching: it covers these batches
                // (the changes are the store's, not this worker's), or this one does next
                // minute; the batch count is not recorded, so it retries.
                if !store.try_lease(Lease::Match)? {
                    debug!("matching left to the worker doing it");
                    return Ok(last);
                }
                with_lease(
                    &mut **store,
                    Lease::Match,
                    |store| -> Result<(), ServiceError> {
                        let summary =
                            match_store_cached(store, &risk, false, &mut owned, &mut |_, _, _| {})?;
                        if summary.days > 0 {
                            info!(
                                days = summary.days,
                                sightings_read = summary.sightings,
                                events = summary.events,
                                venue_hours = summary.venue_hours,
                                cached_days = owned.days(),
                                cache_mib = owned.memory_bytes() >> 20,
                                "matched new batches and keys"
                            );
                        }
                        if let Some(bt) = owned_watch.after_batches(store, &bluetrace)? {
                            info!(
                                cases = bt.cases,
                                venue_hours = bt.venue_hours,
                                tempid_sightings = bt.sightings,
                                used = bt.outcomes.used,
                                undecryptable = bt.outcomes.undecryptable,
                                wrong_org = bt.outcomes.wrong_org,
                                replays = bt.outcomes.replays,
                                decrypted = bt.decrypted,
                                "BlueTrace venue-hours recomputed"
                            );
                        }
                        Ok(())
                    },
                )?;
                Ok(Some(batches))
            };
            let result = run();
            (owned, owned_watch, result)
        })
        .await;
        match result {
            Ok((owned, owned_watch, Ok(batches))) => {
                cache = Some(owned);
                watch = Some(owned_watch);
                matched_batches = batches;
            }
            Ok((owned, owned_watch, Err(e))) => {
                cache = Some(owned);
                watch = Some(owned_watch);
                tracing::warn!(error = %crate::exit::describe(&e), "housekeeping failed; retrying next minute")
            }
            Err(e) => tracing::warn!(error = %e, "housekeeping task failed"),
        }
    }
}
