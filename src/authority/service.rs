//! The store-backed commands' wiring: opening the store from the configuration (or
//! `--database`), the authority's key pair, the ingest daemon (`run`), the matching driver
//! (`match`) and the venue exposure query (`exposures`).
//!
//! Decisions live in [`ingest`](super::ingest), [`crate::matching`] and
//! [`store`](super::store); this file resolves settings and connects them.

use super::config::{self, AuthorityConfig, Database, MatchingSettings};
use super::ingest::{self, IngestLimits, IngestReport};
use super::registry::RegistryError;
use super::store::{ExposureFilter, ExposureRow, SqliteStore, StoreError, VenueHourRow};
use crate::exit::Exit;
use crate::gateway::publisher::MqttSettings;
use crate::matching::{self, MatchKey, MatchStats, RiskConfig, VenueSighting};
use crate::output::{ListFormat, Table};
use crate::seal::{KeyFileError, KeyPair};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio_util::sync::CancellationToken;
use tracing::info;

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
            ServiceError::Ingest(_) => Exit::Software,
            ServiceError::Runtime(_) | ServiceError::Internal(_) => Exit::Software,
            ServiceError::Output(_) => Exit::IoErr,
        }
    }
}

/// The configuration a store-backed command runs with: the file when it exists (any problem
/// in it is an error), else — only when `--database` is given — the built-in defaults.
pub fn load_config(
    config_path: &Path,
    database: Option<&Path>,
) -> Result<(AuthorityConfig, PathBuf), ServiceError> {
    let env = config::process_env();
    let config = if config_path.exists() || database.is_none() {
        config::load(config_path, &env).map_err(ServiceError::Config)?
    } else {
        // No configuration file, but an explicit store: run on the built-in defaults (every
        // key has one), still applying environment overrides.
        config::defaults(&env).map_err(ServiceError::Config)?
    };
    let db = match database {
        Some(path) => path.to_owned(),
        None => match &config.authority.database {
            Database::Sqlite(path) => path.clone(),
        },
    };
    Ok((config, db))
}

/// Opens the store, creating its directory's file if needed.
pub fn open_store(path: &Path) -> Result<SqliteStore, ServiceError> {
    Ok(SqliteStore::open(path)?)
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
    /// Most keys matched for one day.
    pub keys: usize,
    /// Sightings read (summed over days; a sighting near a day boundary is read for both).
    pub sightings: usize,
    /// Exposure events stored.
    pub events: usize,
    /// Venue-hours with exposure.
    pub venue_hours: usize,
    /// The core's counters of the last day matched.
    pub stats: MatchStats,
}

const DAY_S: i64 = 86_400;
const INTERVAL_S: i64 = 600;

/// Matches what changed since the last run (or, with `full`, everything) and replaces the
/// stored exposure results of the affected days.
///
/// The unit of work is a UTC day. A day is *dirty* when a key added or revised since the last
/// run can reach it (its intervals ± the tolerance), or a batch stored since has a window in
/// it (or in the first hour of the next day: an exposure window of up to 30 minutes that
/// starts before midnight reads sightings after it). For each dirty day the core runs over
/// every key that can reach the day and all sightings those keys can match, and the results
/// starting in that day replace the stored ones. An event depends only on its key's sightings
/// and a venue-hour only on the keys and sightings of its hour, so this gives exactly what a
/// full run gives (a test compares the two); determinism holds for a given store.
pub fn match_store(
    store: &mut SqliteStore,
    risk: &RiskConfig,
    full: bool,
) -> Result<MatchSummary, ServiceError> {
    match_store_with_progress(store, risk, full, &mut |_, _, _| {})
}

/// [`match_store`], calling `progress(done, total, day_start_unix_s)` before each day (the CLI
/// prints it when stderr is a terminal).
pub fn match_store_with_progress(
    store: &mut SqliteStore,
    risk: &RiskConfig,
    full: bool,
    progress: &mut dyn FnMut(usize, usize, i64),
) -> Result<MatchSummary, ServiceError> {
    let changes = store.changes_since_match()?;
    let keys = store.keys()?;
    let tolerance = i64::from(risk.tolerance_intervals) * INTERVAL_S;
    // Each key's reach, Unix seconds: its intervals widened by the tolerance.
    let reach = |k: &super::store::StoredKey| {
        let start = i64::from(k.key.rolling_start.0) * INTERVAL_S;
        (
            start - tolerance,
            start + i64::from(k.key.rolling_period.get()) * INTERVAL_S + tolerance,
        )
    };
    let mut days = std::collections::BTreeSet::new();
    let add_span = |from: i64, to: i64, days: &mut std::collections::BTreeSet<i64>| {
        let mut day = from.div_euclid(DAY_S);
        while day * DAY_S < to {
            days.insert(day);
            day += 1;
        }
    };
    if full {
        store.replace_exposures(&[], &[])?;
        for k in &keys {
            let (from, to) = reach(k);
            add_span(from, to, &mut days);
        }
    } else {
        for &(start, period) in &changes.key_ranges {
            let start = i64::from(start) * INTERVAL_S;
            add_span(
                start - tolerance,
                start + i64::from(period) * INTERVAL_S + tolerance,
                &mut days,
            );
        }
        for &window in &changes.windows {
            let t = i64::from(window) * INTERVAL_S;
            days.insert(t.div_euclid(DAY_S));
            if t.rem_euclid(DAY_S) < 3600 {
                days.insert(t.div_euclid(DAY_S) - 1);
            }
        }
    }
    let mut summary = MatchSummary::default();
    let total = days.len();
    for (done, day) in days.into_iter().enumerate() {
        let (day_from, day_to) = (day * DAY_S, (day + 1) * DAY_S);
        progress(done, total, day_from);
        let day_keys: Vec<MatchKey> = keys
            .iter()
            .filter(|k| {
                let (from, to) = reach(k);
                from < day_to + 3600 && to > day_from
            })
            .map(|k| MatchKey {
                id: k.id,
                key: k.key.clone(),
            })
            .collect();
        if day_keys.is_empty() {
            store.replace_exposures_between(day_from, day_to, &[], &[])?;
            continue;
        }
        let from = keys_from(&day_keys, tolerance);
        let to = keys_to(&day_keys, tolerance);
        let sightings: Vec<VenueSighting> = store
            .sightings(
                crate::crypto::Enin(from.div_euclid(INTERVAL_S).max(0) as u32),
                crate::crypto::Enin((to.div_euclid(INTERVAL_S) + 1).max(0) as u32),
            )?
            .into_iter()
            .map(|s| VenueSighting {
                venue: s.venue,
                window_start: s.window_start,
                window_minutes: s.window_minutes,
                rpi: s.rpi,
                aem: s.aem,
                rssi_calibration_db: s.rssi_calibration_db,
                minutes: s.minutes,
            })
            .collect();
        let report = matching::match_keys(&day_keys, &sightings, risk);
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
        summary.days += 1;
        summary.keys = summary.keys.max(day_keys.len());
        summary.sightings += sightings.len();
        summary.events += events.len();
        summary.venue_hours += hours.len();
        summary.stats = report.stats;
    }
    store.set_matched(changes.watermark)?;
    Ok(summary)
}

fn keys_from(keys: &[MatchKey], tolerance: i64) -> i64 {
    keys.iter()
        .map(|k| i64::from(k.key.rolling_start.0) * INTERVAL_S - tolerance)
        .min()
        .unwrap_or(0)
}

fn keys_to(keys: &[MatchKey], tolerance: i64) -> i64 {
    keys.iter()
        .map(|k| {
            (i64::from(k.key.rolling_start.0) + i64::from(k.key.rolling_period.get())) * INTERVAL_S
                + tolerance
        })
        .max()
        .unwrap_or(0)
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

fn local(unix_s: i64, tz: &jiff::tz::TimeZone) -> String {
    jiff::Timestamp::from_second(unix_s)
        .map(|ts| {
            ts.to_zoned_datetime(tz.clone())
                .strftime("%Y-%m-%dT%H:%M%:z")
                .to_string()
        })
        .unwrap_or_else(|_| unix_s.to_string())
}

/// `exposures`: venue-hours where an infectious key was present.
pub fn exposures(
    store: &SqliteStore,
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
pub fn run(config: &AuthorityConfig, database: &Path) -> Result<IngestReport, ServiceError> {
    crate::process::init_logging(config.log.level.as_str(), config.log.format);
    let keys = KeyPair::load(&config.authority.private_key)?;
    let mqtt = mqtt_settings(config)?;
    let store = Arc::new(Mutex::new(open_store(database)?));
    let limits = IngestLimits {
        max_future: config.ingest.max_future,
        retention: config.retention.sightings,
    };
    let risk = risk_config(&config.matching);
    let retention = config.retention;
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
            shutdown.clone(),
        ));
        info!(database = %database.display(), "authority starting");
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
            "authority stopped"
        );
        Ok(report)
    })
}

async fn housekeeping(
    store: Arc<Mutex<SqliteStore>>,
    risk: RiskConfig,
    retention: config::RetentionSettings,
    shutdown: CancellationToken,
) {
    let mut tick = tokio::time::interval(Duration::from_secs(60));
    let mut matched_batches = None;
    let mut minutes = 0u64;
    loop {
        tokio::select! {
            () = shutdown.cancelled() => break,
            _ = tick.tick() => {}
        }
        let (store, risk) = (Arc::clone(&store), risk.clone());
        let purge = minutes.is_multiple_of(60);
        minutes += 1;
        let last = matched_batches;
        let result = tokio::task::spawn_blocking(move || -> Result<Option<u64>, ServiceError> {
            let mut store = store
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            if purge {
                let now = std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map_or(0, |d| d.as_secs() as i64);
                let purged = store.purge(
                    now - retention.sightings.as_secs() as i64,
                    now - retention.keys.as_secs() as i64,
                )?;
                info!(
                    batches = purged.batches,
                    sightings = purged.sightings,
                    keys = purged.keys,
                    "retention purge"
                );
            }
            let batches = store.batch_count()?;
            if last != Some(batches) {
                let summary = match_store(&mut store, &risk, false)?;
                if summary.days > 0 {
                    info!(
                        days = summary.days,
                        sightings = summary.sightings,
                        events = summary.events,
                        venue_hours = summary.venue_hours,
                        "matched new batches and keys"
                    );
                }
            }
            Ok(Some(batches))
        })
        .await;
        match result {
            Ok(Ok(batches)) => matched_batches = batches,
            Ok(Err(e)) => {
                tracing::warn!(error = %crate::exit::describe(&e), "housekeeping failed; retrying next minute")
            }
            Err(e) => tracing::warn!(error = %e, "housekeeping task failed"),
        }
    }
}
