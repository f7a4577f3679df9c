//! The authority's configuration: the schema of `authority.toml`, environment overrides, and
//! the checks that turn them into a typed [`AuthorityConfig`] or into every problem at once.
//!
//! Same rules as the gateway's (the machinery is [`crate::config_schema`]'s): the file (default
//! [`DEFAULT_PATH`]) is strict — unknown sections and keys, wrong types and out-of-range values
//! are errors — and every problem is reported at once, naming the file or the environment
//! variable and the key path, e.g.
//! `authority.toml: keys.public_keys[2]: not a usable P-256 public key: ...`.
//!
//! Environment variables `VENUETRACE_AUTHORITY__SECTION__KEY` override the file (e.g.
//! `VENUETRACE_AUTHORITY__MQTT__PORT=8883`); a key of a table inside a section takes one more
//! part (`VENUETRACE_AUTHORITY__MATCHING__REPORT_TYPE_WEIGHTS__SELF_REPORT=0.5`). Values are
//! parsed as the key's type; lists are comma-separated.
//!
//! `config/authority.toml` in the repository documents every key with its default; tests keep
//! it and the schema (`SCHEMA`) in step.
//!
//! Resolved here: paths (state files against `authority.state_dir`, the rest against the
//! configuration file's directory), the time zone (from the system's IANA database), and the
//! key servers' public keys (they may be given inline, so they are parsed now and a bad one is
//! a configuration problem). Reading the other files it names (the private key, TLS files, the
//! MQTT password and HTTP token files) is left to the daemon, which runs with the rights to
//! read them. What the `[matching]` values mean is the matching core's: they are handed over
//! as plain values ([`MatchingSettings`]).

use crate::bluetrace::{TempIdKey, valid_org};
use crate::config_schema::{
    self, KeySpec, Kind, LOG_FORMATS, LOG_LEVELS, Loader, Preset, Schema, float, int, spec,
};
use crate::export::{ReportType, VerificationKey};
use jiff::tz::TimeZone;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

pub use crate::config_schema::{
    CREDENTIALS_ENV, ClientAuth, ConfigErrors, ConfigProblem, LogFormat, LogLevel, LogSettings,
    MqttPassword, Secret, TlsSettings, process_env,
};

/// Where the authority looks for its configuration unless told otherwise.
pub const DEFAULT_PATH: &str = "/etc/venuetrace/authority.toml";

/// Prefix of the environment variables that override settings: `VENUETRACE_AUTHORITY__` +
/// `SECTION__KEY`, upper case.
pub const ENV_PREFIX: &str = "VENUETRACE_AUTHORITY__";

/// The name of the private key file systemd passes as a credential
/// (`$CREDENTIALS_DIRECTORY/authority.key`).
pub const CREDENTIAL_NAME: &str = "authority.key";

/// The typed, checked configuration of the authority. Relative paths are already resolved.
#[derive(Clone, Debug, PartialEq)]
pub struct AuthorityConfig {
    /// The file it was read from.
    pub file: PathBuf,
    /// Environment variables that overrode a setting, by name, sorted.
    pub overrides: Vec<String>,
    /// `[authority]`: state, key, database, time zone.
    pub authority: AuthoritySettings,
    /// `[mqtt]`: the broker batches come from.
    pub mqtt: MqttSettings,
    /// `[ingest]`: limits on incoming batches.
    pub ingest: IngestSettings,
    /// `[retention]`: how long data is kept.
    pub retention: RetentionSettings,
    /// `[keys]`: trust in diagnosis-key exports.
    pub keys: KeysSettings,
    /// `[matching]`: the exposure risk model.
    pub matching: MatchingSettings,
    /// `[bluetrace]`: BlueTrace (Wiqaytna) TempIDs: keys, presence and contacts.
    pub bluetrace: BluetraceSettings,
    /// `[http]`: the query API and page.
    pub http: HttpSettings,
    /// `[log]`: logging.
    pub log: LogSettings,
}

/// `[authority]`.
#[derive(Clone, Debug, PartialEq)]
pub struct AuthoritySettings {
    /// Directory of the authority's state (database, private key).
    pub state_dir: PathBuf,
    /// The X25519 private key file batches are sealed to: `$CREDENTIALS_DIRECTORY/authority.key`
    /// when systemd provides credentials, else `private_key` resolved against `state_dir`.
    pub private_key: PathBuf,
    /// Where sightings, keys and exposures are stored.
    pub database: Database,
    /// The time zone query output is shown in.
    pub timezone: TimeZone,
}

/// `authority.database`: the store.
#[derive(Clone, PartialEq, Eq)]
pub enum Database {
    /// An SQLite file (resolved against `authority.state_dir`).
    Sqlite(PathBuf),
    /// A PostgreSQL database: the connection URL (`postgres://` or `postgresql://`), which
    /// may hold a password, so it is only ever shown redacted (`Display`, `Debug`).
    Postgres(String),
}

impl Database {
    /// `value` as given to `authority.database` or `--database`: a `postgres://` or
    /// `postgresql://` URL, or an SQLite file (relative to `base` unless absolute). Any other
    /// URL scheme is refused, without echoing the value (it may carry a password).
    pub fn parse(value: &str, base: &Path) -> Result<Database, String> {
        let Some((scheme, _)) = value.split_once("://") else {
            // `join` keeps an absolute path as it is.
            return Ok(Database::Sqlite(base.join(value)));
        };
        if !matches!(
            scheme.to_ascii_lowercase().as_str(),
            "postgres" | "postgresql"
        ) {
            return Err(format!(
                "a {scheme:?} URL is not a supported database: give a postgres:// URL or an \
                 SQLite file (relative to authority.state_dir)"
            ));
        }
        match value.parse::<postgres::Config>() {
            Ok(parsed) if parsed.get_hosts().is_empty() => Err(format!(
                "{}: the PostgreSQL URL names no host",
                crate::authority::pg::redact(value)
            )),
            Ok(_) => Ok(Database::Postgres(value.to_owned())),
            Err(e) => Err(format!(
                "{}: not a valid PostgreSQL URL: {e}",
                crate::authority::pg::redact(value)
            )),
        }
    }
}

impl std::fmt::Display for Database {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Database::Sqlite(path) => write!(f, "{}", path.display()),
            Database::Postgres(url) => f.write_str(&crate::authority::pg::redact(url)),
        }
    }
}

impl std::fmt::Debug for Database {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Database::Sqlite(path) => f.debug_tuple("Sqlite").field(path).finish(),
            Database::Postgres(_) => f.debug_tuple("Postgres").field(&self.to_string()).finish(),
        }
    }
}

/// `[mqtt]`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MqttSettings {
    /// Broker host name or address.
    pub host: String,
    /// Broker port.
    pub port: u16,
    /// MQTT client id (default `venuetrace-authority-{hostname}`).
    pub client_id: String,
    /// TLS, if enabled; `None` is plain TCP.
    pub tls: Option<TlsSettings>,
    /// User name, if any.
    pub username: Option<String>,
    /// Password, if any.
    pub password: Option<MqttPassword>,
    /// MQTT keep-alive interval.
    pub keep_alive: Duration,
    /// The shared-subscription group the authority's workers split batches in.
    pub share_group: String,
}

impl MqttSettings {
    /// The topic filter batches are received on:
    /// `$share/{share_group}/venuetrace/v1/gw/+/batch`.
    pub fn batch_subscription(&self) -> String {
        format!("$share/{}/venuetrace/v1/gw/+/batch", self.share_group)
    }
}

/// `[ingest]`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct IngestSettings {
    /// Windows starting further in the future than this are rejected (clock skew allowance).
    pub max_future: Duration,
    /// Largest sealed batch accepted, bytes.
    pub max_batch_bytes: usize,
}

/// `[retention]`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RetentionSettings {
    /// How long sightings are kept.
    pub sightings: Duration,
    /// How long diagnosis keys are kept.
    pub keys: Duration,
}

/// `[keys]`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KeysSettings {
    /// The key servers' verification keys, each with the id and version it signs as (if
    /// given).
    pub public_keys: Vec<VerificationKey>,
    /// Whether exports without a verified signature are imported anyway.
    pub allow_unsigned: bool,
}

/// `[matching]`, as plain values: the matching core maps them to its own risk model.
#[derive(Clone, Debug, PartialEq)]
pub struct MatchingSettings {
    /// An RPI matches if seen within this many 10-minute intervals of its own interval.
    pub tolerance_intervals: u32,
    /// Longest run of one RPI counted, minutes; longer runs are cut as replays.
    pub max_rpi_run_minutes: u32,
    /// Longest exposure window, minutes.
    pub max_window_minutes: u32,
    /// Attenuation thresholds, dB, strictly increasing: immediate / near / medium / other.
    pub attenuation_thresholds_db: [u8; 3],
    /// Weights of time spent immediate, near, medium and other (0..=2.5 each).
    pub attenuation_weights: [f64; 4],
    /// Weights per report type of the case's key.
    pub report_type_weights: ReportTypeWeights,
    /// Weights per infectiousness of the case on the key's day.
    pub infectiousness_weights: InfectiousnessWeights,
    /// The report type assumed for keys that carry none.
    pub default_report_type: ReportType,
    /// The infectiousness assumed for keys (until days since onset are mapped).
    pub default_infectiousness: Infectiousness,
    /// Windows scoring below this (weighted seconds) are dropped.
    pub minimum_window_score: f64,
    /// Memory for the per-day sighting indexes kept between match runs, MiB.
    pub index_cache_mib: u64,
}

/// Default of `matching.index_cache_mib`: 4 GiB holds ~30 M indexed sightings (~140 bytes
/// each), all of a mid-size deployment's 21 days, or the few days a run needs at 1e8.
pub const DEFAULT_INDEX_CACHE_MIB: u64 = 4096;

/// `matching.report_type_weights` (0..=2.5 each).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct ReportTypeWeights {
    /// Confirmed by a test.
    pub confirmed_test: f64,
    /// Confirmed by a clinician without a test.
    pub confirmed_clinical_diagnosis: f64,
    /// Reported by the person, unconfirmed.
    pub self_report: f64,
    /// Reserved by the specification ("recursive").
    pub recursive: f64,
}

/// `matching.infectiousness_weights` (0..=2.5 each).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct InfectiousnessWeights {
    /// Standard infectiousness.
    pub standard: f64,
    /// High infectiousness.
    pub high: f64,
}

/// How infectious a case was on a key's day (GAEN v2 `Infectiousness`, without `none`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Infectiousness {
    /// `"standard"`.
    Standard,
    /// `"high"`.
    High,
}

impl Infectiousness {
    /// The name used in the file.
    pub fn as_str(self) -> &'static str {
        match self {
            Infectiousness::Standard => "standard",
            Infectiousness::High => "high",
        }
    }
}

/// `[bluetrace]`: how TempID sightings are decrypted and turned into presences and contacts
/// (the values are [`crate::presence`]'s), and whether contacts may be identified.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BluetraceSettings {
    /// The keys TempIDs may be encrypted with (several during a key rotation), each tried in
    /// turn; empty: TempIDs are stored but not decrypted.
    pub keys: Vec<TempIdKeyFile>,
    /// Organisation codes whose TempIDs are used; empty: any.
    pub orgs: Vec<String>,
    /// Clock skew allowed around a TempID's validity window, seconds.
    pub validity_tolerance_s: u32,
    /// Reads of one UID at one venue at most this far apart form one presence, minutes.
    pub presence_gap_minutes: u32,
    /// Each presence is widened by this on both sides before overlaps are computed, minutes.
    pub presence_margin_minutes: u32,
    /// Whether `bluetrace contacts` may name contacts' UIDs.
    pub identify_contacts: bool,
    /// The append-only log of every `bluetrace contacts` use (resolved against
    /// `authority.state_dir`).
    pub audit_log: PathBuf,
}

impl BluetraceSettings {
    /// The keys, ready to decrypt with.
    pub fn tempid_keys(&self) -> Vec<TempIdKey> {
        self.keys.iter().map(TempIdKeyFile::key).collect()
    }
}

/// One `bluetrace.key_files` entry, read and checked: the file and the 32-byte AES-256-GCM key
/// it holds (base64, as the OpenTrace backend keeps it). `Debug` shows the file, never the key.
#[derive(Clone, PartialEq, Eq)]
pub struct TempIdKeyFile {
    /// The file it was read from.
    pub path: PathBuf,
    key: [u8; 32],
}

impl TempIdKeyFile {
    /// The key.
    pub fn key(&self) -> TempIdKey {
        TempIdKey::new(&self.key)
    }
}

impl std::fmt::Debug for TempIdKeyFile {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "TempIdKeyFile({}, <redacted>)", self.path.display())
    }
}

/// `[http]`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HttpSettings {
    /// Where the query API and page listen; `None` = off.
    pub listen: Option<SocketAddr>,
    /// The file holding the bearer token health teams use; `None` = no authentication (only
    /// allowed on loopback addresses).
    pub token_file: Option<PathBuf>,
}

/// Reads the configuration file at `path`, applies the `VENUETRACE_AUTHORITY__*` overrides
/// found in `env` (the caller passes [`process_env`]; tests pass their own), and checks
/// everything. Returns the typed configuration, or every problem found.
pub fn load(path: &Path, env: &[(String, String)]) -> Result<AuthorityConfig, ConfigErrors> {
    config_schema::load(path, env, &AUTHORITY_SCHEMA, |loader| {
        build(loader, path, env)
    })
}

/// The built-in defaults (every key has one), with the `VENUETRACE_AUTHORITY__*` overrides
/// in `env`: what store-backed commands run with when `--database` is given and there is no
/// configuration file.
pub fn defaults(env: &[(String, String)]) -> Result<AuthorityConfig, ConfigErrors> {
    let path = Path::new("(built-in defaults)");
    config_schema::load_text(path, "", env, &AUTHORITY_SCHEMA, |loader| {
        build(loader, path, env)
    })
}

impl AuthorityConfig {
    /// A few lines saying what this configuration will do, for `check-config`.
    pub fn summary(&self) -> String {
        let a = &self.authority;
        let database = match &a.database {
            Database::Sqlite(path) => format!("SQLite {}", path.display()),
            Database::Postgres(_) => format!("PostgreSQL {}", a.database),
        };
        let mut lines = vec![format!(
            "authority: state in {}; private key {}; database {database}; times in {}",
            a.state_dir.display(),
            a.private_key.display(),
            a.timezone.iana_name().unwrap_or("(unnamed time zone)")
        )];
        let m = &self.mqtt;
        lines.push(format!(
            "mqtt: {}:{} {} as {}; subscribed to {}",
            m.host,
            m.port,
            match &m.tls {
                None => "without TLS",
                Some(TlsSettings {
                    client_auth: Some(_),
                    ..
                }) => "with mutual TLS",
                Some(_) => "with TLS",
            },
            m.client_id,
            m.batch_subscription()
        ));
        let bytes = self.ingest.max_batch_bytes;
        lines.push(format!(
            "ingest: windows up to {} min in the future, batches up to {}",
            self.ingest.max_future.as_secs() / 60,
            if bytes.is_multiple_of(1 << 20) {
                format!("{} MiB", bytes >> 20)
            } else {
                format!("{bytes} bytes")
            }
        ));
        lines.push(format!(
            "retention: sightings {} days, keys {} days",
            self.retention.sightings.as_secs() / 86_400,
            self.retention.keys.as_secs() / 86_400
        ));
        let k = &self.keys;
        let trusted = if k.public_keys.is_empty() {
            "no key-server public keys".to_owned()
        } else {
            let names: Vec<String> = k
                .public_keys
                .iter()
                .map(|key| match (&key.id, &key.version) {
                    (None, _) => "any id".to_owned(),
                    (Some(id), None) => id.clone(),
                    (Some(id), Some(version)) => format!("{id}:{version}"),
                })
                .collect();
            format!(
                "{} key-server public key{} ({})",
                names.len(),
                if names.len() == 1 { "" } else { "s" },
                names.join(", ")
            )
        };
        lines.push(format!(
            "keys: {trusted}; {}",
            match (k.allow_unsigned, k.public_keys.is_empty()) {
                (true, _) => "exports without a verified signature are imported too",
                (false, true) => "every import will be rejected (nothing can verify)",
                (false, false) => "exports without a verified signature are rejected",
            }
        ));
        let x = &self.matching;
        let [t0, t1, t2] = x.attenuation_thresholds_db;
        let [w0, w1, w2, w3] = x.attenuation_weights;
        lines.push(format!(
            "matching: ±{} intervals; RPI runs cut at {} min; windows up to {} min; \
             thresholds {t0}/{t1}/{t2} dB weighted {w0}/{w1}/{w2}/{w3}; \
             minimum window score {}; index cache {} MiB",
            x.tolerance_intervals,
            x.max_rpi_run_minutes,
            x.max_window_minutes,
            x.minimum_window_score,
            x.index_cache_mib
        ));
        let b = &self.bluetrace;
        lines.push(format!(
            "bluetrace: {}; organisations {}; validity ±{} s; presences merge reads up to {} min \
             apart, widened by {} min; {}",
            match b.keys.len() {
                0 => "no TempID keys (TempIDs are stored, not decrypted)".to_owned(),
                1 => "1 TempID key".to_owned(),
                n => format!("{n} TempID keys"),
            },
            if b.orgs.is_empty() {
                "any".to_owned()
            } else {
                b.orgs.join(", ")
            },
            b.validity_tolerance_s,
            b.presence_gap_minutes,
            b.presence_margin_minutes,
            if b.identify_contacts {
                format!(
                    "contacts may be identified, each use logged to {}",
                    b.audit_log.display()
                )
            } else {
                "contacts are never identified (counts only)".to_owned()
            }
        ));
        lines.push(match (&self.http.listen, &self.http.token_file) {
            (None, _) => "http: off".to_owned(),
            (Some(addr), None) => format!("http: {addr} without authentication (loopback only)"),
            (Some(addr), Some(file)) => {
                format!("http: {addr}, bearer token from {}", file.display())
            }
        });
        lines.push(format!(
            "log: {}, {}",
            self.log.level.as_str(),
            self.log.format.as_str()
        ));
        if !self.overrides.is_empty() {
            lines.push(format!(
                "overridden by the environment: {}",
                self.overrides.join(", ")
            ));
        }
        lines.join("\n")
    }
}

// ---------------------------------------------------------------------------------------------
// The schema.

/// The authority's schema: sections, keys and the environment prefix.
static AUTHORITY_SCHEMA: Schema = Schema {
    sections: SECTIONS,
    keys: SCHEMA,
    env_prefix: ENV_PREFIX,
};

/// The sections of the file, in documentation order.
const SECTIONS: &[&str] = &[
    "authority",
    "mqtt",
    "ingest",
    "retention",
    "keys",
    "matching",
    "bluetrace",
    "http",
    "log",
];

/// GAEN v2 weights (attenuation, report type, infectiousness) are 0-250 %.
const MAX_WEIGHT: f64 = 2.5;

/// The report types a key can be weighted by, as the file names them.
const REPORT_TYPES: &[&str] = &[
    "confirmed_test",
    "confirmed_clinical_diagnosis",
    "self_report",
    "recursive",
];

/// Every key, with its type and default. `config/authority.toml` documents each (tests check).
const SCHEMA: &[KeySpec] = &[
    spec(
        "authority",
        "state_dir",
        Kind::Str,
        Preset::Str("/var/lib/venuetrace-authority"),
    ),
    spec(
        "authority",
        "private_key",
        Kind::Str,
        Preset::Str("authority.key"),
    ),
    spec(
        "authority",
        "database",
        Kind::Str,
        Preset::Str("authority.sqlite"),
    ),
    spec(
        "authority",
        "timezone",
        Kind::Str,
        Preset::Str("Africa/Casablanca"),
    ),
    spec("mqtt", "host", Kind::Str, Preset::Str("localhost")),
    spec("mqtt", "port", int(1, 65_535), Preset::Int(1883)),
    spec("mqtt", "client_id", Kind::Str, Preset::Str("")),
    spec("mqtt", "tls", Kind::Bool, Preset::Bool(false)),
    spec("mqtt", "ca_file", Kind::Str, Preset::Str("")),
    spec("mqtt", "client_cert", Kind::Str, Preset::Str("")),
    spec("mqtt", "client_key", Kind::Str, Preset::Str("")),
    spec("mqtt", "username", Kind::Str, Preset::Str("")),
    KeySpec {
        secret: true,
        ..spec("mqtt", "password", Kind::Str, Preset::Str(""))
    },
    spec("mqtt", "password_file", Kind::Str, Preset::Str("")),
    spec(
        "mqtt",
        "keep_alive_seconds",
        int(1, 65_535),
        Preset::Int(30),
    ),
    spec("mqtt", "share_group", Kind::Str, Preset::Str("authority")),
    spec(
        "ingest",
        "max_future_minutes",
        int(0, 1440),
        Preset::Int(15),
    ),
    spec(
        "ingest",
        "max_batch_bytes",
        int(1024, 64 << 20),
        Preset::Int(16 << 20),
    ),
    spec("retention", "sightings_days", int(1, 365), Preset::Int(21)),
    spec("retention", "keys_days", int(1, 365), Preset::Int(14)),
    spec("keys", "public_keys", Kind::StrList, Preset::StrList(&[])),
    spec("keys", "allow_unsigned", Kind::Bool, Preset::Bool(false)),
    spec(
        "matching",
        "tolerance_intervals",
        int(0, 144),
        Preset::Int(12),
    ),
    spec(
        "matching",
        "max_rpi_run_minutes",
        int(10, 60),
        Preset::Int(20),
    ),
    spec(
        "matching",
        "max_window_minutes",
        int(10, 120),
        Preset::Int(30),
    ),
    spec(
        "matching",
        "attenuation_thresholds_db",
        Kind::IntList {
            len: 3,
            min: 0,
            max: 255,
        },
        Preset::IntList(&[55, 63, 73]),
    ),
    spec(
        "matching",
        "attenuation_weights",
        Kind::FloatList {
            len: 4,
            min: 0.0,
            max: MAX_WEIGHT,
        },
        Preset::FloatList(&[1.5, 1.0, 0.5, 0.0]),
    ),
    spec(
        "matching",
        "report_type_weights.confirmed_test",
        float(0.0, MAX_WEIGHT),
        Preset::Float(1.0),
    ),
    spec(
        "matching",
        "report_type_weights.confirmed_clinical_diagnosis",
        float(0.0, MAX_WEIGHT),
        Preset::Float(1.0),
    ),
    spec(
        "matching",
        "report_type_weights.self_report",
        float(0.0, MAX_WEIGHT),
        Preset::Float(1.0),
    ),
    spec(
        "matching",
        "report_type_weights.recursive",
        float(0.0, MAX_WEIGHT),
        Preset::Float(0.0),
    ),
    spec(
        "matching",
        "infectiousness_weights.standard",
        float(0.0, MAX_WEIGHT),
        Preset::Float(1.0),
    ),
    spec(
        "matching",
        "infectiousness_weights.high",
        float(0.0, MAX_WEIGHT),
        Preset::Float(1.0),
    ),
    spec(
        "matching",
        "default_report_type",
        Kind::OneOf(REPORT_TYPES),
        Preset::Str("confirmed_test"),
    ),
    spec(
        "matching",
        "default_infectiousness",
        Kind::OneOf(&["standard", "high"]),
        Preset::Str("standard"),
    ),
    spec(
        "matching",
        "minimum_window_score",
        float(0.0, 86_400.0),
        Preset::Float(0.0),
    ),
    spec(
        "matching",
        "index_cache_mib",
        int(64, 1 << 20),
        Preset::Int(DEFAULT_INDEX_CACHE_MIB as i64),
    ),
    spec(
        "bluetrace",
        "key_files",
        Kind::StrList,
        Preset::StrList(&[]),
    ),
    spec(
        "bluetrace",
        "orgs",
        Kind::StrList,
        Preset::StrList(&["MAR"]),
    ),
    spec(
        "bluetrace",
        "validity_tolerance_s",
        int(0, 3600),
        Preset::Int(60),
    ),
    spec(
        "bluetrace",
        "presence_gap_minutes",
        int(1, 120),
        Preset::Int(15),
    ),
    spec(
        "bluetrace",
        "presence_margin_minutes",
        int(0, 30),
        Preset::Int(2),
    ),
    spec(
        "bluetrace",
        "identify_contacts",
        Kind::Bool,
        Preset::Bool(false),
    ),
    spec(
        "bluetrace",
        "audit_log",
        Kind::Str,
        Preset::Str("bluetrace-audit.jsonl"),
    ),
    spec("http", "listen", Kind::Str, Preset::Str("127.0.0.1:8080")),
    spec("http", "token_file", Kind::Str, Preset::Str("")),
    spec("log", "level", Kind::OneOf(LOG_LEVELS), Preset::Str("info")),
    spec(
        "log",
        "format",
        Kind::OneOf(LOG_FORMATS),
        Preset::Str("text"),
    ),
];

// ---------------------------------------------------------------------------------------------
// Building the typed configuration.

/// Builds the typed configuration, reporting every semantic problem. `None` if any value was
/// missing or invalid (each already reported).
fn build(l: &mut Loader, path: &Path, env: &[(String, String)]) -> Option<AuthorityConfig> {
    let config_dir = path.parent().unwrap_or(Path::new(""));
    let authority = authority(l, env);
    let mqtt = mqtt(l, config_dir);
    let ingest = ingest(l);
    let retention = retention(l);
    let keys = keys(l, config_dir);
    let matching = matching(l);
    let bluetrace = bluetrace(
        l,
        config_dir,
        authority.as_ref().map(|a| a.state_dir.as_path()),
    );
    let http = http(l, config_dir);
    let log = l.log();
    Some(AuthorityConfig {
        file: path.to_owned(),
        overrides: l.overrides().to_vec(),
        authority: authority?,
        mqtt: mqtt?,
        ingest: ingest?,
        retention: retention?,
        keys: keys?,
        matching: matching?,
        bluetrace: bluetrace?,
        http: http?,
        log: log?,
    })
}

fn authority(l: &mut Loader, env: &[(String, String)]) -> Option<AuthoritySettings> {
    let state_dir = l.non_empty("authority", "state_dir").map(PathBuf::from);
    let private_key = l.private_key(
        "authority",
        "private_key",
        state_dir.as_deref(),
        env,
        CREDENTIAL_NAME,
    );
    let database = database(l, state_dir.as_deref());
    let timezone = timezone(l);
    Some(AuthoritySettings {
        state_dir: state_dir?,
        private_key: private_key?,
        database: database?,
        timezone: timezone?,
    })
}

/// `authority.database`: an SQLite file relative to `state_dir`, or a PostgreSQL URL
/// ([`Database::parse`]). A bad URL is refused without being echoed (it may carry a password).
fn database(l: &mut Loader, state_dir: Option<&Path>) -> Option<Database> {
    let value = l.non_empty("authority", "database")?;
    if value.contains("://") {
        return match Database::parse(&value, Path::new("")) {
            Ok(db) => Some(db),
            Err(message) => {
                l.problem_at("authority", "database", message);
                None
            }
        };
    }
    Database::parse(&value, state_dir?).ok()
}

fn timezone(l: &mut Loader) -> Option<TimeZone> {
    let name = l.string("authority", "timezone")?;
    match TimeZone::get(name.trim()) {
        Ok(tz) if !name.trim().is_empty() => Some(tz),
        _ => {
            let names: Vec<String> = jiff::tz::db()
                .available()
                .map(|n| n.as_str().to_owned())
                .collect();
            let hint = config_schema::did_you_mean(name.trim(), names.iter().map(String::as_str));
            l.problem_at(
                "authority",
                "timezone",
                format!(
                    "invalid value {name:?}: expected a time zone of the IANA database, like \
                     \"Africa/Casablanca\" or \"UTC\"{hint}"
                ),
            );
            None
        }
    }
}

fn mqtt(l: &mut Loader, config_dir: &Path) -> Option<MqttSettings> {
    let default_client_id = match hostname() {
        Some(host) => format!("venuetrace-authority-{host}"),
        None => "venuetrace-authority".to_owned(),
    };
    let connection = l.mqtt_connection(config_dir, Some(default_client_id));
    let share_group = l.string("mqtt", "share_group");
    let share_group = match share_group {
        Some(group)
            if !group.is_empty()
                && group
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-')) =>
        {
            Some(group)
        }
        Some(group) => {
            l.problem_at(
                "mqtt",
                "share_group",
                format!("invalid value {group:?}: expected one or more of A-Z a-z 0-9 _ -"),
            );
            None
        }
        None => None,
    };
    let c = connection?;
    Some(MqttSettings {
        host: c.host,
        port: c.port,
        client_id: c.client_id,
        tls: c.tls,
        username: c.username,
        password: c.password,
        keep_alive: c.keep_alive,
        share_group: share_group?,
    })
}

/// This machine's host name (Linux), for the default MQTT client id.
fn hostname() -> Option<String> {
    ["/proc/sys/kernel/hostname", "/etc/hostname"]
        .iter()
        .filter_map(|file| std::fs::read_to_string(file).ok())
        .map(|text| text.trim().to_owned())
        .find(|name| !name.is_empty())
}

fn ingest(l: &mut Loader) -> Option<IngestSettings> {
    let max_future = l
        .int("ingest", "max_future_minutes")
        .and_then(|m| u64::try_from(m).ok())
        .map(|m| Duration::from_secs(m * 60));
    let max_batch_bytes = l
        .int("ingest", "max_batch_bytes")
        .and_then(|b| usize::try_from(b).ok());
    Some(IngestSettings {
        max_future: max_future?,
        max_batch_bytes: max_batch_bytes?,
    })
}

fn retention(l: &mut Loader) -> Option<RetentionSettings> {
    let days = |l: &Loader, key| {
        l.int("retention", key)
            .and_then(|d| u64::try_from(d).ok())
            .map(|d| Duration::from_secs(d * 86_400))
    };
    Some(RetentionSettings {
        sightings: days(l, "sightings_days")?,
        keys: days(l, "keys_days")?,
    })
}

fn keys(l: &mut Loader, config_dir: &Path) -> Option<KeysSettings> {
    let allow_unsigned = l.boolean("keys", "allow_unsigned");
    let items = l.list("keys", "public_keys");
    let mut public_keys = Some(Vec::new());
    for (index, item) in items.iter().flatten().enumerate() {
        match parse_public_key(item, config_dir) {
            Ok(key) => {
                if let Some(keys) = &mut public_keys {
                    keys.push(key);
                }
            }
            Err(message) => {
                l.problem_at_item("keys", "public_keys", index, message);
                public_keys = None;
            }
        }
    }
    Some(KeysSettings {
        public_keys: items.and(public_keys)?,
        allow_unsigned: allow_unsigned?,
    })
}

/// One `keys.public_keys` entry, `[ID[:VERSION]@]KEY`: KEY is base64 of a DER
/// SubjectPublicKeyInfo, or a PEM (or DER, or base64) file relative to `config_dir`. As for
/// `keys inspect --public-key`, a whole entry naming an existing file wins over the `@` split.
fn parse_public_key(entry: &str, config_dir: &Path) -> Result<VerificationKey, String> {
    let entry = entry.trim();
    let (label, key) = match entry.split_once('@') {
        Some((label, key)) if !config_dir.join(entry).is_file() => (Some(label), key.trim()),
        _ => (None, entry),
    };
    let (id, version) = match label {
        None => (None, None),
        Some(label) => {
            let (id, version) = match label.split_once(':') {
                Some((id, version)) => (id, Some(version)),
                None => (label, None),
            };
            if id.is_empty() || version.is_some_and(str::is_empty) {
                return Err(format!(
                    "{label:?} before \"@\" is not ID or ID:VERSION (neither may be empty)"
                ));
            }
            (Some(id.to_owned()), version.map(str::to_owned))
        }
    };
    if key.is_empty() {
        return Err("no key: expected [ID[:VERSION]@]KEY".to_owned());
    }
    let file = config_dir.join(key);
    let parsed = if file.is_file() {
        let bytes =
            std::fs::read(&file).map_err(|e| format!("cannot read {}: {e}", file.display()))?;
        VerificationKey::parse(&bytes).map_err(|e| {
            format!(
                "{}: not a usable P-256 public key: {}",
                file.display(),
                crate::exit::describe(&e)
            )
        })?
    } else {
        VerificationKey::parse(key.as_bytes()).map_err(|e| {
            // Base64 has '/' but never '.': such a value was more likely meant as a file.
            if key.contains('.') || key.contains('/') {
                format!(
                    "{}: no such file (nor is the entry base64 of a P-256 public key)",
                    file.display()
                )
            } else {
                format!(
                    "not a usable P-256 public key: {}",
                    crate::exit::describe(&e)
                )
            }
        })?
    };
    Ok(parsed.with_id(id, version))
}

fn matching(l: &mut Loader) -> Option<MatchingSettings> {
    let small = |l: &Loader, key| l.int("matching", key).and_then(|v| u32::try_from(v).ok());
    let tolerance_intervals = small(l, "tolerance_intervals");
    let max_rpi_run_minutes = small(l, "max_rpi_run_minutes");
    let max_window_minutes = small(l, "max_window_minutes");
    let thresholds = l
        .int_list("matching", "attenuation_thresholds_db")
        .and_then(|t| {
            let bytes: Vec<u8> = t.iter().filter_map(|&v| u8::try_from(v).ok()).collect();
            <[u8; 3]>::try_from(bytes).ok()
        });
    let thresholds = match thresholds {
        Some(t) if t[0] < t[1] && t[1] < t[2] => Some(t),
        Some([a, b, c]) => {
            l.problem_at(
                "matching",
                "attenuation_thresholds_db",
                format!(
                    "[{a}, {b}, {c}] is not strictly increasing: the thresholds separate \
                     immediate < near < medium < other"
                ),
            );
            None
        }
        None => None,
    };
    let weights = l
        .float_list("matching", "attenuation_weights")
        .and_then(|w| <[f64; 4]>::try_from(w).ok());
    let weight = |l: &Loader, key| l.float("matching", key);
    let report_type_weights = (|| {
        Some(ReportTypeWeights {
            confirmed_test: weight(l, "report_type_weights.confirmed_test")?,
            confirmed_clinical_diagnosis: weight(
                l,
                "report_type_weights.confirmed_clinical_diagnosis",
            )?,
            self_report: weight(l, "report_type_weights.self_report")?,
            recursive: weight(l, "report_type_weights.recursive")?,
        })
    })();
    let infectiousness_weights = (|| {
        Some(InfectiousnessWeights {
            standard: weight(l, "infectiousness_weights.standard")?,
            high: weight(l, "infectiousness_weights.high")?,
        })
    })();
    let default_report_type =
        l.string("matching", "default_report_type")
            .map(|name| match name.as_str() {
                "confirmed_clinical_diagnosis" => ReportType::ConfirmedClinicalDiagnosis,
                "self_report" => ReportType::SelfReport,
                "recursive" => ReportType::Recursive,
                _ => ReportType::ConfirmedTest,
            });
    let default_infectiousness =
        l.string("matching", "default_infectiousness")
            .map(|name| match name.as_str() {
                "high" => Infectiousness::High,
                _ => Infectiousness::Standard,
            });
    let minimum_window_score = l.float("matching", "minimum_window_score");
    let index_cache_mib = l
        .int("matching", "index_cache_mib")
        .and_then(|v| u64::try_from(v).ok());
    Some(MatchingSettings {
        tolerance_intervals: tolerance_intervals?,
        max_rpi_run_minutes: max_rpi_run_minutes?,
        max_window_minutes: max_window_minutes?,
        attenuation_thresholds_db: thresholds?,
        attenuation_weights: weights?,
        report_type_weights: report_type_weights?,
        infectiousness_weights: infectiousness_weights?,
        default_report_type: default_report_type?,
        default_infectiousness: default_infectiousness?,
        minimum_window_score: minimum_window_score?,
        index_cache_mib: index_cache_mib?,
    })
}

/// `[bluetrace]`: key files (relative to `config_dir`) read and checked now, each problem
/// naming its entry; organisation codes checked; the audit log resolved against `state_dir`.
fn bluetrace(
    l: &mut Loader,
    config_dir: &Path,
    state_dir: Option<&Path>,
) -> Option<BluetraceSettings> {
    let files = l.list("bluetrace", "key_files");
    let mut keys = Some(Vec::new());
    for (index, entry) in files.iter().flatten().enumerate() {
        match read_tempid_key(&config_dir.join(entry.trim())) {
            Ok(key) => {
                if let Some(keys) = &mut keys {
                    keys.push(key);
                }
            }
            Err(message) => {
                l.problem_at_item("bluetrace", "key_files", index, message);
                keys = None;
            }
        }
    }
    let listed = l.list("bluetrace", "orgs");
    let mut orgs = Some(Vec::new());
    for (index, org) in listed.iter().flatten().enumerate() {
        if valid_org(org) {
            if let Some(orgs) = &mut orgs {
                orgs.push(org.clone());
            }
        } else {
            l.problem_at_item(
                "bluetrace",
                "orgs",
                index,
                format!(
                    "invalid value {org:?}: expected an organisation code, 1-16 characters of \
                     A-Z a-z 0-9 _ (Wiqaytna's is \"MAR\")"
                ),
            );
            orgs = None;
        }
    }
    let small = |l: &Loader, key| l.int("bluetrace", key).and_then(|v| u32::try_from(v).ok());
    let validity_tolerance_s = small(l, "validity_tolerance_s");
    let presence_gap_minutes = small(l, "presence_gap_minutes");
    let presence_margin_minutes = small(l, "presence_margin_minutes");
    let identify_contacts = l.boolean("bluetrace", "identify_contacts");
    let audit_log = l.non_empty("bluetrace", "audit_log");
    Some(BluetraceSettings {
        keys: files.and(keys)?,
        orgs: listed.and(orgs)?,
        validity_tolerance_s: validity_tolerance_s?,
        presence_gap_minutes: presence_gap_minutes?,
        presence_margin_minutes: presence_margin_minutes?,
        identify_contacts: identify_contacts?,
        // `join` keeps an absolute path as it is.
        audit_log: state_dir?.join(audit_log?),
    })
}

/// Reads one TempID key file: base64 (standard alphabet, surrounding white space ignored) of
/// 32 bytes. The message names the file and never shows its contents.
fn read_tempid_key(path: &Path) -> Result<TempIdKeyFile, String> {
    use base64::Engine;
    let text = std::fs::read_to_string(path)
        .map_err(|e| format!("{}: cannot read the TempID key file: {e}", path.display()))?;
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(text.trim())
        .map_err(|_| {
            format!(
                "{}: not base64 of an AES-256 key (the OpenTrace backend's ENCRYPTION_KEY)",
                path.display()
            )
        })?;
    let key = <[u8; 32]>::try_from(bytes.as_slice()).map_err(|_| {
        format!(
            "{}: holds {} bytes, expected the 32 bytes of an AES-256 key",
            path.display(),
            bytes.len()
        )
    })?;
    Ok(TempIdKeyFile {
        path: path.to_owned(),
        key,
    })
}

fn http(l: &mut Loader, config_dir: &Path) -> Option<HttpSettings> {
    let listen = match l.optional("http", "listen") {
        Some(Some(text)) => match text.trim().parse::<SocketAddr>() {
            Ok(addr) => Some(Some(addr)),
            Err(_) => {
                l.problem_at(
                    "http",
                    "listen",
                    format!(
                        "invalid value {text:?}: expected ADDRESS:PORT like \"127.0.0.1:8080\" \
                         or \"[::1]:8080\", or \"\" for off"
                    ),
                );
                None
            }
        },
        Some(None) => Some(None),
        None => None,
    };
    let token_file = l.optional_path("http", "token_file", config_dir);
    match (&listen, &token_file) {
        (Some(None), Some(Some(_))) => l.problem_at(
            "http",
            "token_file",
            "has no effect unless http.listen is set".into(),
        ),
        (Some(Some(addr)), Some(None)) if !addr.ip().to_canonical().is_loopback() => l.problem_at(
            "http",
            "listen",
            format!(
                "{addr} is not a loopback address: serving beyond this machine needs \
                     http.token_file (the bearer token health teams authenticate with)"
            ),
        ),
        _ => {}
    }
    Some(HttpSettings {
        listen: listen?,
        token_file: token_file?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeSet;

    /// A P-256 public key (base64 of its DER SubjectPublicKeyInfo), from a fixed secret.
    fn key_b64() -> String {
        let secret = p256::ecdsa::SigningKey::from_slice(&[7u8; 32]).expect("a valid P-256 scalar");
        VerificationKey::from_verifying_key(*secret.verifying_key()).public_key_base64()
    }

    fn env(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect()
    }

    /// Writes `text` as `authority.toml` in a fresh directory and loads it.
    fn load_text(
        text: &str,
        env: &[(String, String)],
    ) -> (tempfile::TempDir, Result<AuthorityConfig, ConfigErrors>) {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("authority.toml");
        std::fs::write(&path, text).expect("writes");
        let result = load(&path, env);
        (dir, result)
    }

    /// The problems as `key: message` lines (the source is checked separately).
    fn problems(errors: &ConfigErrors) -> Vec<String> {
        errors
            .problems
            .iter()
            .map(|p| format!("{}: {}", p.key, p.message))
            .collect()
    }

    fn expect_errors(result: Result<AuthorityConfig, ConfigErrors>) -> ConfigErrors {
        match result {
            Ok(config) => panic!("expected problems, loaded {config:?}"),
            Err(errors) => errors,
        }
    }

    fn expect_config(result: Result<AuthorityConfig, ConfigErrors>) -> AuthorityConfig {
        result.unwrap_or_else(|errors| panic!("expected a configuration, got:\n{errors}"))
    }

    fn shipped_file() -> PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR")).join("config/authority.toml")
    }

    /// `key = value` with a bare lowercase key, or `None`.
    fn key_of(line: &str) -> Option<(&str, &str)> {
        line.split_once(" = ").filter(|(k, _)| {
            !k.is_empty() && k.bytes().all(|b| b.is_ascii_lowercase() || b == b'_')
        })
    }

    /// `config/authority.toml` lists every key of the schema under its section (commented or
    /// not; a table's keys inline, `# table = { key = value, ... }`), and nothing that is not a
    /// key: the documentation cannot drift from the code.
    #[test]
    fn shipped_file_documents_every_key() {
        let text = std::fs::read_to_string(shipped_file()).expect("config/authority.toml");
        let mut section = String::new();
        let mut documented = BTreeSet::new();
        for line in text.lines() {
            let line = line.trim();
            if let Some(name) = line.strip_prefix('[').and_then(|l| l.strip_suffix(']')) {
                section = name.to_owned();
                continue;
            }
            let body = line.strip_prefix('#').unwrap_or(line).trim_start();
            let Some((key, value)) = key_of(body) else {
                continue;
            };
            match value.strip_prefix('{').and_then(|v| v.strip_suffix('}')) {
                Some(inner) => {
                    for pair in inner.split(',') {
                        let (sub, _) = key_of(pair.trim()).expect("inline `key = value`");
                        documented.insert(format!("{section}.{key}.{sub}"));
                    }
                }
                None => {
                    documented.insert(format!("{section}.{key}"));
                }
            }
        }
        let schema: BTreeSet<String> = SCHEMA
            .iter()
            .map(|s| format!("{}.{}", s.section, s.key))
            .collect();
        let missing: Vec<_> = schema.difference(&documented).collect();
        let stale: Vec<_> = documented.difference(&schema).collect();
        assert!(missing.is_empty(), "not documented: {missing:?}");
        assert!(
            stale.is_empty(),
            "documented but not in the schema: {stale:?}"
        );
    }

    /// The shipped file loads as it is (every key has a default) and gives the documented
    /// defaults.
    #[test]
    fn shipped_file_loads_with_the_defaults() {
        let config = expect_config(load(&shipped_file(), &[]));
        assert_eq!(
            config.authority,
            AuthoritySettings {
                state_dir: "/var/lib/venuetrace-authority".into(),
                private_key: "/var/lib/venuetrace-authority/authority.key".into(),
                database: Database::Sqlite("/var/lib/venuetrace-authority/authority.sqlite".into()),
                timezone: TimeZone::get("Africa/Casablanca").expect("in the IANA database"),
            }
        );
        let mqtt = &config.mqtt;
        assert_eq!(
            (mqtt.host.as_str(), mqtt.port, &mqtt.tls, &mqtt.username),
            ("localhost", 1883, &None, &None)
        );
        assert!(
            mqtt.client_id.starts_with("venuetrace-authority"),
            "{}",
            mqtt.client_id
        );
        assert_eq!(mqtt.keep_alive, Duration::from_secs(30));
        assert_eq!(
            mqtt.batch_subscription(),
            "$share/authority/venuetrace/v1/gw/+/batch"
        );
        assert_eq!(
            config.ingest,
            IngestSettings {
                max_future: Duration::from_secs(15 * 60),
                max_batch_bytes: 16 << 20,
            }
        );
        assert_eq!(
            config.retention,
            RetentionSettings {
                sightings: Duration::from_secs(21 * 86_400),
                keys: Duration::from_secs(14 * 86_400),
            }
        );
        assert_eq!(
            config.keys,
            KeysSettings {
                public_keys: Vec::new(),
                allow_unsigned: false
            }
        );
        assert_eq!(
            config.matching,
            MatchingSettings {
                tolerance_intervals: 12,
                max_rpi_run_minutes: 20,
                max_window_minutes: 30,
                attenuation_thresholds_db: [55, 63, 73],
                attenuation_weights: [1.5, 1.0, 0.5, 0.0],
                report_type_weights: ReportTypeWeights {
                    confirmed_test: 1.0,
                    confirmed_clinical_diagnosis: 1.0,
                    self_report: 1.0,
                    recursive: 0.0,
                },
                infectiousness_weights: InfectiousnessWeights {
                    standard: 1.0,
                    high: 1.0
                },
                default_report_type: ReportType::ConfirmedTest,
                default_infectiousness: Infectiousness::Standard,
                minimum_window_score: 0.0,
                index_cache_mib: DEFAULT_INDEX_CACHE_MIB,
            }
        );
        assert_eq!(
            config.bluetrace,
            BluetraceSettings {
                keys: Vec::new(),
                orgs: vec!["MAR".to_owned()],
                validity_tolerance_s: 60,
                presence_gap_minutes: 15,
                presence_margin_minutes: 2,
                identify_contacts: false,
                audit_log: "/var/lib/venuetrace-authority/bluetrace-audit.jsonl".into(),
            }
        );
        assert_eq!(
            config.http,
            HttpSettings {
                listen: Some("127.0.0.1:8080".parse().expect("an address")),
                token_file: None,
            }
        );
        assert_eq!(
            config.log,
            LogSettings {
                level: LogLevel::Info,
                format: LogFormat::Text
            }
        );
        assert!(config.overrides.is_empty());
    }

    /// The values written in the shipped file's comments are the real defaults: uncommenting
    /// every `# key = value` line changes nothing.
    #[test]
    fn documented_defaults_are_the_defaults() {
        let text = std::fs::read_to_string(shipped_file()).expect("config/authority.toml");
        let uncommented: String = text
            .lines()
            .map(|line| match line.strip_prefix("# ") {
                Some(rest) if key_of(rest).is_some() => rest,
                _ => line,
            })
            .map(|line| format!("{line}\n"))
            .collect();
        let (_dir, explicit) = load_text(&uncommented, &[]);
        let explicit = expect_config(explicit);
        let defaults = expect_config(load(&shipped_file(), &[]));
        assert_eq!(
            AuthorityConfig {
                file: PathBuf::new(),
                ..explicit
            },
            AuthorityConfig {
                file: PathBuf::new(),
                ..defaults
            }
        );
    }

    /// `authority.database` takes a PostgreSQL URL; it is shown (summary, Display, Debug) and
    /// refused (a bad port) with the password redacted.
    #[test]
    fn postgres_database_url() {
        let url = "postgres://vt:hunter2@db.example:5433/venuetrace";
        let (_dir, result) = load_text(&format!("[authority]\ndatabase = \"{url}\"\n"), &[]);
        let config = result.expect("a PostgreSQL URL is valid");
        assert_eq!(
            config.authority.database,
            Database::Postgres(url.to_owned())
        );
        let shown = format!(
            "{} {:?} {}",
            config.authority.database,
            config.authority.database,
            config.summary()
        );
        assert!(
            shown.contains("vt:***@db.example:5433/venuetrace"),
            "{shown}"
        );
        assert!(!shown.contains("hunter2"), "{shown}");

        let (_dir, result) = load_text(
            "[authority]\ndatabase = \"postgresql://vt:hunter2@db.example:port/x\"\n",
            &[],
        );
        let errors = expect_errors(result).to_string();
        assert!(
            errors.contains("authority.database") && errors.contains("not a valid PostgreSQL URL"),
            "{errors}"
        );
        assert!(!errors.contains("hunter2"), "{errors}");
    }

    /// Every problem in a file is reported in one go, each with the file and the key path:
    /// unknown sections, keys and table keys (with a suggestion when close), wrong types,
    /// out-of-range values and lists, and the semantic checks (database URL, time zone,
    /// thresholds order, listen address, share group).
    #[test]
    fn every_problem_is_reported_at_once() {
        let text = r#"
[authority]
database = "mysql://venuetrace:hunter2@db.example/venuetrace"
timezone = "Mars/Olympus_Mons"

[mqtt]
prot = 1884
share_group = "auth/ority"

[ingest]
max_future_minutes = 1441

[matching]
attenuation_thresholds_db = [63, 55, 73]
attenuation_weights = [1.5, 1.0, 0.5]
report_type_weights = { confirmed_test = 3.0, self_reprot = 1.0 }
infectiousness_weights = 1.0
default_report_type = "revoked"

[http]
listen = "0.0.0.0:8080"

[retension]
sightings_days = 7
"#;
        let (dir, result) = load_text(text, &[]);
        let errors = expect_errors(result);
        let file = dir.path().join("authority.toml").display().to_string();
        assert!(errors.problems.iter().all(|p| p.source == file), "{errors}");
        assert_eq!(
            problems(&errors),
            [
                "ingest.max_future_minutes: invalid value 1441: expected an integer 0..=1440",
                "matching.attenuation_weights: invalid value [1.5, 1, 0.5]: expected a list of 4 \
                 numbers >= 0 and <= 2.5",
                "matching.default_report_type: invalid value \"revoked\": expected one of \
                 \"confirmed_test\", \"confirmed_clinical_diagnosis\", \"self_report\", \
                 \"recursive\"",
                "matching.infectiousness_weights: expected a table of \"standard\", \"high\", \
                 found a number",
                "matching.report_type_weights.confirmed_test: invalid value 3: expected a number \
                 >= 0 and <= 2.5",
                "matching.report_type_weights.self_reprot: unknown key (did you mean \
                 \"self_report\"?)",
                "mqtt.prot: unknown key (did you mean \"port\"?)",
                "retension: unknown section (did you mean \"retention\"?)",
                "authority.database: a \"mysql\" URL is not a supported database: give a \
                 postgres:// URL or an SQLite file (relative to authority.state_dir)",
                "authority.timezone: invalid value \"Mars/Olympus_Mons\": expected a time zone \
                 of the IANA database, like \"Africa/Casablanca\" or \"UTC\"",
                "mqtt.share_group: invalid value \"auth/ority\": expected one or more of A-Z a-z \
                 0-9 _ -",
                "matching.attenuation_thresholds_db: [63, 55, 73] is not strictly increasing: \
                 the thresholds separate immediate < near < medium < other",
                "http.listen: 0.0.0.0:8080 is not a loopback address: serving beyond this \
                 machine needs http.token_file (the bearer token health teams authenticate \
                 with)",
            ]
        );
        // The database URL's password is never echoed.
        assert!(!errors.to_string().contains("hunter2"), "{errors}");
    }

    /// Environment variables override the file, keys of tables included, are parsed as the
    /// key's type and listed as overrides; problems with them name the variable.
    #[test]
    fn environment_overrides_the_file() {
        let key = key_b64();
        let (_dir, result) = load_text(
            "[mqtt]\nhost = \"broker.example\"\n",
            &env(&[
                ("VENUETRACE_AUTHORITY__MQTT__PORT", "8883"),
                ("VENUETRACE_AUTHORITY__MQTT__SHARE_GROUP", "workers-2"),
                (
                    "VENUETRACE_AUTHORITY__MATCHING__REPORT_TYPE_WEIGHTS__SELF_REPORT",
                    "0.5",
                ),
                (
                    "VENUETRACE_AUTHORITY__MATCHING__ATTENUATION_THRESHOLDS_DB",
                    "50, 60, 70",
                ),
                (
                    "VENUETRACE_AUTHORITY__MATCHING__ATTENUATION_WEIGHTS",
                    "2,1,0.5,0",
                ),
                (
                    "VENUETRACE_AUTHORITY__KEYS__PUBLIC_KEYS",
                    &format!("604:v1@{key}, {key}"),
                ),
                ("VENUETRACE_AUTHORITY__HTTP__LISTEN", ""),
                ("VENUETRACE_GATEWAY__MQTT__PORT", "1"),
            ]),
        );
        let config = expect_config(result);
        assert_eq!(
            (config.mqtt.host.as_str(), config.mqtt.port),
            ("broker.example", 8883)
        );
        assert_eq!(
            config.mqtt.batch_subscription(),
            "$share/workers-2/venuetrace/v1/gw/+/batch"
        );
        assert_eq!(config.matching.report_type_weights.self_report, 0.5);
        assert_eq!(config.matching.attenuation_thresholds_db, [50, 60, 70]);
        assert_eq!(config.matching.attenuation_weights, [2.0, 1.0, 0.5, 0.0]);
        let ids: Vec<_> = config
            .keys
            .public_keys
            .iter()
            .map(|k| (k.id.as_deref(), k.version.as_deref()))
            .collect();
        assert_eq!(ids, [(Some("604"), Some("v1")), (None, None)]);
        assert_eq!(config.http.listen, None);
        assert_eq!(config.overrides.len(), 7);
        assert!(
            config
                .summary()
                .contains("VENUETRACE_AUTHORITY__MQTT__SHARE_GROUP")
        );

        let (_dir, result) = load_text(
            "",
            &env(&[
                ("VENUETRACE_AUTHORITY__MATCHING__REPORT_TYPE_WEIGHTS", "1"),
                (
                    "VENUETRACE_AUTHORITY__MATCHING__REPORT_TYPE_WEIGHTS__SELF",
                    "1",
                ),
                (
                    "VENUETRACE_AUTHORITY__MATCHING__TOLERANCE_INTERVALS__X",
                    "1",
                ),
                (
                    "VENUETRACE_AUTHORITY__MATCHING__ATTENUATION_THRESHOLDS_DB",
                    "50,sixty,70",
                ),
                ("VENUETRACE_AUTHORITY__RETENTION__KEYS_DAYS", "0"),
            ]),
        );
        let lines: Vec<String> = expect_errors(result)
            .problems
            .iter()
            .map(ToString::to_string)
            .collect();
        assert_eq!(
            lines,
            [
                "VENUETRACE_AUTHORITY__MATCHING__ATTENUATION_THRESHOLDS_DB: \
                 matching.attenuation_thresholds_db: invalid value \"50,sixty,70\": expected a \
                 list of 3 integers 0..=255",
                "VENUETRACE_AUTHORITY__MATCHING__REPORT_TYPE_WEIGHTS: \
                 matching.report_type_weights: a table: set each of its keys as \
                 VENUETRACE_AUTHORITY__MATCHING__REPORT_TYPE_WEIGHTS__KEY, KEY one of \
                 CONFIRMED_TEST, CONFIRMED_CLINICAL_DIAGNOSIS, SELF_REPORT, RECURSIVE",
                "VENUETRACE_AUTHORITY__MATCHING__REPORT_TYPE_WEIGHTS__SELF: \
                 matching.report_type_weights.self: unknown key",
                "VENUETRACE_AUTHORITY__MATCHING__TOLERANCE_INTERVALS__X: \
                 matching.tolerance_intervals.x: not a setting: expected \
                 VENUETRACE_AUTHORITY__SECTION__KEY",
                "VENUETRACE_AUTHORITY__RETENTION__KEYS_DAYS: retention.keys_days: invalid \
                 value 0: expected an integer 1..=365",
            ]
        );
    }

    /// Key-server public keys: inline base64 or a PEM file next to the configuration, with an
    /// optional `ID@` or `ID:VERSION@` label; each bad entry is reported with its index.
    #[test]
    fn public_keys_inline_or_from_files() {
        let key = key_b64();
        let dir = tempfile::tempdir().expect("tempdir");
        let pem = VerificationKey::parse(key.as_bytes())
            .expect("parses")
            .public_key_pem();
        std::fs::write(dir.path().join("ma.pem"), pem).expect("writes");
        std::fs::write(dir.path().join("bad.pem"), "not a key\n").expect("writes");
        let path = dir.path().join("authority.toml");
        let load_keys = |entries: &[&str]| {
            let list: Vec<String> = entries.iter().map(|e| format!("{e:?}")).collect();
            std::fs::write(
                &path,
                format!("[keys]\npublic_keys = [{}]\n", list.join(", ")),
            )
            .expect("writes");
            load(&path, &[])
        };
        let keys = expect_config(load_keys(&[&key, "604@ma.pem", "604:v2@ma.pem"]))
            .keys
            .public_keys;
        assert_eq!(keys.len(), 3);
        assert!(keys.iter().all(|k| k.public_key_base64() == key));
        assert_eq!(
            keys.iter()
                .map(|k| (k.id.as_deref(), k.version.as_deref()))
                .collect::<Vec<_>>(),
            [(None, None), (Some("604"), None), (Some("604"), Some("v2"))]
        );

        let errors = expect_errors(load_keys(&[
            &key,
            "AAAA",
            "keys/absent.pem",
            "bad.pem",
            &format!(":v1@{key}"),
            "604@",
        ]));
        let found = problems(&errors);
        assert_eq!(found.len(), 5, "{errors}");
        assert!(
            found[0].starts_with("keys.public_keys[1]: not a usable P-256 public key: "),
            "{errors}"
        );
        assert!(
            found[1].starts_with("keys.public_keys[2]: ") && found[1].contains("no such file"),
            "{errors}"
        );
        assert!(
            found[2].starts_with("keys.public_keys[3]: ")
                && found[2].contains("bad.pem: not a usable P-256 public key"),
            "{errors}"
        );
        assert_eq!(
            found[3],
            "keys.public_keys[4]: \":v1\" before \"@\" is not ID or ID:VERSION (neither may be \
             empty)"
        );
        assert_eq!(
            found[4],
            "keys.public_keys[5]: no key: expected [ID[:VERSION]@]KEY"
        );
    }

    /// Paths: private key and database relative to the state directory unless absolute,
    /// TLS, password and token files relative to the configuration file; systemd credentials
    /// win for the private key.
    #[test]
    fn paths_resolve_as_documented() {
        let text = "[authority]\nstate_dir = \"/srv/auth\"\nprivate_key = \"keys/a.key\"\n\
                    database = \"/data/a.sqlite\"\n\
                    [mqtt]\ntls = true\nca_file = \"ca.pem\"\nusername = \"u\"\n\
                    password_file = \"/run/pw\"\n\
                    [http]\nlisten = \"[::]:8443\"\ntoken_file = \"token\"\n";
        let (dir, result) = load_text(text, &[]);
        let config = expect_config(result);
        assert_eq!(
            config.authority.private_key,
            Path::new("/srv/auth/keys/a.key")
        );
        assert_eq!(
            config.authority.database,
            Database::Sqlite("/data/a.sqlite".into())
        );
        assert_eq!(
            config.mqtt.tls,
            Some(TlsSettings {
                ca_file: Some(dir.path().join("ca.pem")),
                client_auth: None,
            })
        );
        assert_eq!(
            config.mqtt.password,
            Some(MqttPassword::File("/run/pw".into()))
        );
        assert_eq!(config.http.token_file, Some(dir.path().join("token")));
        assert!(
            config
                .summary()
                .contains("http: [::]:8443, bearer token from")
        );

        let (_dir, result) = load_text(
            text,
            &env(&[(
                CREDENTIALS_ENV,
                "/run/credentials/venuetrace-authority.service",
            )]),
        );
        assert_eq!(
            expect_config(result).authority.private_key,
            Path::new("/run/credentials/venuetrace-authority.service/authority.key")
        );
    }

    /// The HTTP API listens on loopback without a token, anywhere with one, or nowhere; a token
    /// without a listener, or an address that does not parse, is a problem.
    #[test]
    fn http_listen_and_token() {
        let listen = |text: &str| load_text(&format!("[http]\n{text}\n"), &[]);
        for ok in [
            "listen = \"127.0.0.1:0\"",
            "listen = \"[::1]:8080\"",
            "listen = \"\"",
        ] {
            let (_d, r) = listen(ok);
            expect_config(r);
        }
        let (_d, r) = listen("listen = \"\"\ntoken_file = \"t\"");
        assert_eq!(
            problems(&expect_errors(r)),
            ["http.token_file: has no effect unless http.listen is set"]
        );
        let (_d, r) = listen("listen = \"localhost:8080\"");
        assert_eq!(
            problems(&expect_errors(r)),
            [
                "http.listen: invalid value \"localhost:8080\": expected ADDRESS:PORT like \
                 \"127.0.0.1:8080\" or \"[::1]:8080\", or \"\" for off"
            ]
        );
        let (_d, r) = listen("listen = \"[::]:8080\"");
        assert_eq!(expect_errors(r).problems.len(), 1);
    }

    /// Other database URLs are refused without echoing them; time zones come from the IANA
    /// database.
    #[test]
    fn database_and_timezone() {
        let (_d, r) = load_text(
            "[authority]\ndatabase = \"mysql://u:p@h/db\"\ntimezone = \"UTC\"\n",
            &[],
        );
        assert_eq!(
            problems(&expect_errors(r)),
            [
                "authority.database: a \"mysql\" URL is not a supported database: give a \
                 postgres:// URL or an SQLite file (relative to authority.state_dir)"
            ]
        );
        let (_d, r) = load_text("[authority]\ntimezone = \"Europe/Paris\"\n", &[]);
        assert_eq!(
            expect_config(r).authority.timezone.iana_name(),
            Some("Europe/Paris")
        );
        let (_d, r) = load_text("[authority]\ntimezone = \"\"\n", &[]);
        assert_eq!(expect_errors(r).problems.len(), 1);
        let (_d, r) = load_text("[authority]\ntimezone = \"Africa/Casablance\"\n", &[]);
        let shown = expect_errors(r).to_string();
        assert!(
            shown.ends_with("(did you mean \"Africa/Casablanca\"?)"),
            "{shown}"
        );
    }

    /// Matching tables may be written as `[matching.table]` sections and set in part; the
    /// rest keeps its defaults.
    #[test]
    fn matching_tables_can_be_set_in_part() {
        let (_d, r) = load_text(
            "[matching]\ndefault_infectiousness = \"high\"\n\
             [matching.infectiousness_weights]\nhigh = 2.5\n",
            &[],
        );
        let matching = expect_config(r).matching;
        assert_eq!(
            matching.infectiousness_weights,
            InfectiousnessWeights {
                standard: 1.0,
                high: 2.5
            }
        );
        assert_eq!(matching.default_infectiousness, Infectiousness::High);
    }

    /// TempID key files are read relative to the configuration file (base64 of 32 bytes,
    /// white space around it ignored), several allowed; the audit log is relative to the state
    /// directory; each bad key file and organisation code is its own problem, naming the entry
    /// and the file, and no message shows a key.
    #[test]
    fn bluetrace_keys_orgs_and_audit_log() {
        use base64::Engine;
        let b64 = |bytes: &[u8]| base64::engine::general_purpose::STANDARD.encode(bytes);
        let dir = tempfile::tempdir().expect("tempdir");
        std::fs::create_dir(dir.path().join("keys")).expect("mkdir");
        std::fs::write(
            dir.path().join("keys/a.key"),
            format!("{}\n", b64(&[1; 32])),
        )
        .expect("writes");
        std::fs::write(dir.path().join("keys/b.key"), b64(&[2; 32])).expect("writes");
        std::fs::write(dir.path().join("short.key"), b64(&[3; 16])).expect("writes");
        std::fs::write(dir.path().join("text.key"), "not base64!").expect("writes");
        let path = dir.path().join("authority.toml");
        let text = "[authority]\nstate_dir = \"/srv/a\"\n[bluetrace]\n\
                    key_files = [\"keys/a.key\", \"keys/b.key\"]\norgs = [\"MAR\", \"SG_MOH\"]\n\
                    identify_contacts = true\naudit_log = \"audit/bt.jsonl\"\n";
        std::fs::write(&path, text).expect("writes");
        let config = expect_config(load(&path, &[]));
        let b = &config.bluetrace;
        assert_eq!(b.keys.len(), 2);
        assert_eq!(b.keys[0].path, dir.path().join("keys/a.key"));
        assert_eq!(b.keys[0], b.keys[0].clone());
        assert_ne!(b.keys[0], b.keys[1]);
        assert_eq!(b.tempid_keys().len(), 2);
        assert!(!format!("{b:?}").contains(&b64(&[1; 32])), "{b:?}");
        assert_eq!(b.orgs, ["MAR", "SG_MOH"]);
        assert!(b.identify_contacts);
        assert_eq!(b.audit_log, Path::new("/srv/a/audit/bt.jsonl"));
        assert!(
            config.summary().contains("2 TempID keys"),
            "{}",
            config.summary()
        );

        std::fs::write(
            &path,
            "[bluetrace]\nkey_files = [\"keys/a.key\", \"absent.key\", \"text.key\", \
             \"short.key\"]\norgs = [\"MAR\", \"M A R\", \"\"]\nvalidity_tolerance_s = 3601\n\
             presence_gap_minutes = 0\npresence_margin_minutes = 31\naudit_log = \"\"\n",
        )
        .expect("writes");
        let errors = expect_errors(load(&path, &[]));
        let found = problems(&errors);
        let dir_text = dir.path().display().to_string();
        assert_eq!(found.len(), 9, "{errors}");
        assert!(
            found[0].starts_with("bluetrace.presence_gap_minutes: invalid value 0"),
            "{errors}"
        );
        assert!(
            found.iter().any(|p| p.starts_with(&format!(
                "bluetrace.key_files[1]: {dir_text}/absent.key: cannot read the TempID key file"
            ))),
            "{errors}"
        );
        assert!(
            found.contains(&format!(
                "bluetrace.key_files[2]: {dir_text}/text.key: not base64 of an AES-256 key (the \
             OpenTrace backend's ENCRYPTION_KEY)"
            )),
            "{errors}"
        );
        assert!(
            found.contains(&format!(
                "bluetrace.key_files[3]: {dir_text}/short.key: holds 16 bytes, expected the 32 \
             bytes of an AES-256 key"
            )),
            "{errors}"
        );
        for item in [
            "orgs[1]: invalid value \"M A R\"",
            "orgs[2]: invalid value \"\"",
        ] {
            assert!(
                found
                    .iter()
                    .any(|p| p.starts_with(&format!("bluetrace.{item}"))),
                "{item}: {errors}"
            );
        }
        assert!(
            found.contains(&"bluetrace.audit_log: must not be empty".to_owned()),
            "{errors}"
        );
        assert!(!errors.to_string().contains(&b64(&[3; 16])), "{errors}");
    }

    /// The MQTT password is never echoed in a message, nor in `Debug` output or the summary;
    /// the connection checks are the gateway's.
    #[test]
    fn mqtt_like_the_gateway() {
        let (_d, r) = load_text("[mqtt]\npassword = 987654\n", &[]);
        let shown = expect_errors(r).to_string();
        assert!(!shown.contains("987654"), "{shown}");
        let (_d, r) = load_text(
            "[mqtt]\nusername = \"u\"\npassword = \"hunter2\"\nclient_id = \"auth-1\"\n",
            &[],
        );
        let config = expect_config(r);
        assert_eq!(config.mqtt.client_id, "auth-1");
        assert!(!format!("{config:?}").contains("hunter2"));
        assert!(!config.summary().contains("hunter2"));
        let (_d, r) = load_text("[mqtt]\nclient_cert = \"c.pem\"\n", &[]);
        assert_eq!(
            problems(&expect_errors(r)),
            [
                "mqtt.client_cert: has no effect unless mqtt.tls = true",
                "mqtt.client_cert: needs mqtt.client_key too",
            ]
        );
    }
}
