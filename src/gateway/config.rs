//! The gateway's configuration: the schema of `gateway.toml`, environment overrides, and the
//! checks that turn them into a typed [`GatewayConfig`] or into every problem at once.
//!
//! The file (default [`DEFAULT_PATH`]) is TOML, read through the `config` crate into a tree of
//! values. That tree is then walked against the schema below, collecting every problem (unknown
//! sections and keys, wrong types, out-of-range values, settings that contradict each other)
//! instead of stopping at the first, as a serde derive would. Each problem names where the value
//! came from (the file, or the environment variable) and the key path, e.g.
//! `gateway.toml: mqtt.port: invalid value "x": expected an integer 1..=65535`.
//!
//! Environment variables `VENUETRACE_GATEWAY__SECTION__KEY` override the file (e.g.
//! `VENUETRACE_GATEWAY__MQTT__PORT=8883`). They are parsed here rather than by
//! `config::Environment`, which guesses each value's type before knowing the key (a password of
//! `0123` would become the integer 123) and forgets which variable a value came from. Values are
//! parsed as the key's type; lists are comma-separated.
//!
//! `config/gateway.toml` in the repository documents every key with its default; tests keep it
//! and the schema (`SCHEMA`) in step. Reading the files this configuration names (TLS
//! certificates, the private key, the password file) is left to the daemon, which runs with the
//! rights to read them; only the authority's public key is resolved here, since it may be given
//! inline.
//!
//! Note: DESIGN.md §4 writes the environment prefix as `VENUETRACE__`; the gateway uses
//! `VENUETRACE_GATEWAY__` so one environment can configure both binaries without collisions.

use crate::advert::ServiceUuid;
use crate::gateway::outbox::{Backoff, OutboxOptions};
use base64::Engine;
use config::{FileFormat, Source, Value, ValueKind};
use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// Where the gateway looks for its configuration unless told otherwise.
pub const DEFAULT_PATH: &str = "/etc/venuetrace/gateway.toml";

/// Prefix of the environment variables that override settings: `VENUETRACE_GATEWAY__` +
/// `SECTION__KEY`, upper case.
pub const ENV_PREFIX: &str = "VENUETRACE_GATEWAY__";

/// Set by systemd's `LoadCredential=`: when present, the private key is
/// `$CREDENTIALS_DIRECTORY/gateway.key`, whatever `gateway.private_key` says.
pub const CREDENTIALS_ENV: &str = "CREDENTIALS_DIRECTORY";

/// The typed, checked configuration of a gateway. Relative paths are already resolved.
#[derive(Clone, Debug, PartialEq)]
pub struct GatewayConfig {
    /// The file it was read from.
    pub file: PathBuf,
    /// Environment variables that overrode a setting, by name, sorted.
    pub overrides: Vec<String>,
    /// `[gateway]`: who this gateway is and where it keeps its state.
    pub gateway: GatewaySettings,
    /// `[authority]`: whom batches are sealed to.
    pub authority: AuthoritySettings,
    /// `[scan]`: where adverts come from.
    pub scan: ScanSettings,
    /// `[sim]`: synthetic phones, used with `scan.source = "sim"`.
    pub sim: SimSettings,
    /// `[window]`: aggregation windows.
    pub window: WindowSettings,
    /// `[outbox]`: sealed batches waiting for receipts.
    pub outbox: OutboxSettings,
    /// `[mqtt]`: the broker batches are published to.
    pub mqtt: MqttSettings,
    /// `[log]`: logging.
    pub log: LogSettings,
}

/// `[gateway]`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GatewaySettings {
    /// The id enrolled at the authority (1-64 of `A-Z a-z 0-9 . _ -`).
    pub id: String,
    /// The venue this gateway covers (same charset).
    pub venue: String,
    /// Directory of the gateway's state (outbox, key).
    pub state_dir: PathBuf,
    /// The gateway's private key file: `$CREDENTIALS_DIRECTORY/gateway.key` when systemd
    /// provides credentials, else `private_key` resolved against `state_dir`.
    pub private_key: PathBuf,
    /// Added by the authority to the RSSI this gateway measures, dB (-30..=30).
    pub rssi_calibration_db: i8,
}

/// `[authority]`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AuthoritySettings {
    /// The authority's X25519 public key, that batches are sealed to.
    pub public_key: [u8; 32],
}

/// Where adverts come from (`scan.source`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ScanSource {
    /// The Bluetooth adapter, through BlueZ (`"bluez"`).
    Bluez,
    /// A recorded capture file (`"replay:PATH"`; a relative path is relative to the working
    /// directory).
    Replay(PathBuf),
    /// Synthetic phones (`"sim"`), see [`SimSettings`].
    Sim,
}

/// `[scan]`.
#[derive(Clone, Debug, PartialEq)]
pub struct ScanSettings {
    /// Where adverts come from.
    pub source: ScanSource,
    /// The BlueZ adapter (e.g. `hci0`); `None` for the default one.
    pub adapter: Option<String>,
    /// 128-bit service UUIDs that mark a BlueTrace phone's advert.
    pub bluetrace_service_uuids: Vec<ServiceUuid>,
    /// Replay speed factor; 0 = as fast as possible.
    pub replay_speed: f64,
}

/// `[sim]`: the simulated venue, plain values (the simulator maps them to its own type).
#[derive(Clone, Debug, PartialEq)]
pub struct SimSettings {
    /// Random seed: the same seed gives the same phones and adverts.
    pub seed: u64,
    /// Number of distinct phones that visit.
    pub phones: u32,
    /// Simulated duration, hours.
    pub hours: f64,
    /// Speed factor against the wall clock; 0 = as fast as possible.
    pub speed: f64,
    /// Where to write the ground truth (who was where when), if anywhere.
    pub ground_truth: Option<PathBuf>,
}

/// `[window]`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct WindowSettings {
    /// Window length, minutes: a multiple of 10 from 10 to 60, so windows are whole ENIN
    /// intervals.
    pub minutes: u32,
    /// Cap on distinct RPIs per window (memory bound); more are counted as dropped.
    pub max_rpis: u32,
}

impl WindowSettings {
    /// The window length.
    pub fn length(&self) -> Duration {
        Duration::from_secs(u64::from(self.minutes) * 60)
    }

    /// The window length in ENIN intervals (10 minutes each).
    pub fn intervals(&self) -> u32 {
        self.minutes / 10
    }
}

/// `[outbox]`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OutboxSettings {
    /// The outbox database file (resolved against `gateway.state_dir`).
    pub path: PathBuf,
    /// How long batches are kept without a receipt.
    pub retention: Duration,
    /// Quota on stored envelope bytes.
    pub max_bytes: u64,
}

impl OutboxSettings {
    /// The limits to open the outbox with.
    pub fn options(&self) -> OutboxOptions {
        OutboxOptions {
            retention: self.retention,
            max_bytes: self.max_bytes,
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
    /// MQTT client id (default `venuetrace-gw-{gateway.id}`).
    pub client_id: String,
    /// TLS, if enabled; `None` is plain TCP.
    pub tls: Option<TlsSettings>,
    /// User name, if any.
    pub username: Option<String>,
    /// Password, if any.
    pub password: Option<MqttPassword>,
    /// MQTT keep-alive interval.
    pub keep_alive: Duration,
    /// Resend schedule of batches without a receipt.
    pub resend: Backoff,
}

/// TLS to the broker.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TlsSettings {
    /// PEM file of the CA certificates to trust; `None` = the system roots.
    pub ca_file: Option<PathBuf>,
    /// Client certificate for mutual TLS, if any.
    pub client_auth: Option<ClientAuth>,
}

/// A client certificate and its key, PEM files.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ClientAuth {
    /// The certificate (chain).
    pub cert: PathBuf,
    /// Its private key.
    pub key: PathBuf,
}

/// Where the MQTT password comes from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum MqttPassword {
    /// Given in the configuration.
    Inline(Secret),
    /// Read from this file (trailing newline removed) when connecting.
    File(PathBuf),
}

/// A secret string: `Debug` does not show it.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    /// The secret itself, for the one place that needs it.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(<redacted>)")
    }
}

/// `[log]`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LogSettings {
    /// Most verbose level logged.
    pub level: LogLevel,
    /// Output format.
    pub format: LogFormat,
}

/// `log.level`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LogLevel {
    /// `"error"`.
    Error,
    /// `"warn"`.
    Warn,
    /// `"info"`.
    Info,
    /// `"debug"`.
    Debug,
    /// `"trace"` (the only level at which secrets may appear, DESIGN.md §3.5).
    Trace,
}

impl LogLevel {
    /// The name used in the file and by `tracing` filters.
    pub fn as_str(self) -> &'static str {
        match self {
            LogLevel::Error => "error",
            LogLevel::Warn => "warn",
            LogLevel::Info => "info",
            LogLevel::Debug => "debug",
            LogLevel::Trace => "trace",
        }
    }
}

/// `log.format`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LogFormat {
    /// `"text"`: one human-readable line per event (journald adds the time).
    Text,
    /// `"json"`: one JSON object per event.
    Json,
}

/// One thing wrong with the configuration.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ConfigProblem {
    /// Where the value came from: the file's path, or the environment variable's name.
    pub source: String,
    /// The key path (`mqtt.port`), empty for problems with the whole file.
    pub key: String,
    /// What is wrong.
    pub message: String,
}

impl fmt::Display for ConfigProblem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.key.is_empty() {
            write!(f, "{}: {}", self.source, self.message)
        } else {
            write!(f, "{}: {}: {}", self.source, self.key, self.message)
        }
    }
}

/// Every problem found in a configuration; displayed one per line.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ConfigErrors {
    /// The problems, in the order found (file, then environment, then cross-checks).
    pub problems: Vec<ConfigProblem>,
}

impl fmt::Display for ConfigErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, problem) in self.problems.iter().enumerate() {
            if i > 0 {
                f.write_str("\n")?;
            }
            write!(f, "{problem}")?;
        }
        Ok(())
    }
}

impl std::error::Error for ConfigErrors {}

/// Reads the configuration file at `path`, applies the `VENUETRACE_GATEWAY__*` overrides found
/// in `env` (the caller passes [`process_env`]; tests pass their own), and checks everything.
/// Returns the typed configuration, or every problem found.
pub fn load(path: &Path, env: &[(String, String)]) -> Result<GatewayConfig, ConfigErrors> {
    let file = path.display().to_string();
    let whole_file = |message: String| ConfigErrors {
        problems: vec![ConfigProblem {
            source: file.clone(),
            key: String::new(),
            message,
        }],
    };
    let text = std::fs::read_to_string(path)
        .map_err(|e| whole_file(format!("cannot read the configuration file: {e}")))?;
    let tree = config::File::from_str(&text, FileFormat::Toml)
        .collect()
        .map_err(|e| whole_file(format!("not valid TOML: {e}")))?;
    let mut loader = Loader::new(file.clone());
    loader.walk_file(&tree);
    loader.walk_env(env);
    loader.check_required();
    let config = loader.build(path, env);
    match config {
        Some(config) if loader.problems.is_empty() => Ok(config),
        _ => {
            if loader.problems.is_empty() {
                // `build` gives `None` only after recording why; keep that promise visible.
                loader.problem(
                    &Origin::File,
                    "",
                    "internal error: a setting is missing without a reported problem".into(),
                );
            }
            Err(ConfigErrors {
                problems: loader.problems,
            })
        }
    }
}

/// The process environment as [`load`] takes it. Variables whose name is not UTF-8 are skipped
/// (none of ours is); values that are not UTF-8 are converted lossily, so a broken value of one
/// of ours is reported rather than ignored.
pub fn process_env() -> Vec<(String, String)> {
    std::env::vars_os()
        .filter_map(|(name, value)| {
            let name = name.into_string().ok()?;
            let value = value.to_string_lossy().into_owned();
            Some((name, value))
        })
        .collect()
}

impl GatewayConfig {
    /// A few lines saying what this configuration will do, for `check-config`.
    pub fn summary(&self) -> String {
        let g = &self.gateway;
        let mut lines = vec![format!(
            "gateway {} at venue {}; state in {}; private key {}",
            g.id,
            g.venue,
            g.state_dir.display(),
            g.private_key.display()
        )];
        let source = match &self.scan.source {
            ScanSource::Bluez => format!(
                "bluez ({})",
                self.scan
                    .adapter
                    .as_deref()
                    .map_or("default adapter".to_owned(), |a| format!("adapter {a}"))
            ),
            ScanSource::Replay(path) => format!("replay of {}", path.display()),
            ScanSource::Sim => format!(
                "simulation of {} phones over {} h (seed {})",
                self.sim.phones, self.sim.hours, self.sim.seed
            ),
        };
        lines.push(format!(
            "scan: {source}; {}-minute windows of at most {} RPIs",
            self.window.minutes, self.window.max_rpis
        ));
        lines.push(format!(
            "outbox: {}; kept {} days, at most {} MiB",
            self.outbox.path.display(),
            self.outbox.retention.as_secs() / 86_400,
            self.outbox.max_bytes >> 20
        ));
        let m = &self.mqtt;
        lines.push(format!(
            "mqtt: {}:{} {} as {}; resend after {} s, doubling up to {} s",
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
            m.resend.initial.as_secs(),
            m.resend.max.as_secs()
        ));
        lines.push(format!(
            "log: {}, {}",
            self.log.level.as_str(),
            match self.log.format {
                LogFormat::Text => "text",
                LogFormat::Json => "json",
            }
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

/// The sections of the file, in documentation order.
const SECTIONS: &[&str] = &[
    "gateway",
    "authority",
    "scan",
    "sim",
    "window",
    "outbox",
    "mqtt",
    "log",
];

/// The type (and range) of a key's value.
#[derive(Clone, Copy, Debug)]
enum Kind {
    /// Any string; its meaning is checked when building the typed configuration.
    Str,
    /// An integer in `min..=max`.
    Int { min: i64, max: i64 },
    /// `window.minutes`: a multiple of 10 in 10..=60.
    WindowMinutes,
    /// A finite number above `min` (or at it, if `min_inclusive`) and at most `max`. TOML
    /// integers are accepted too.
    Float {
        min: f64,
        min_inclusive: bool,
        max: f64,
    },
    /// `true` or `false`.
    Bool,
    /// One of these strings.
    OneOf(&'static [&'static str]),
    /// A list of strings (comma-separated in an environment variable).
    StrList,
}

impl Kind {
    /// What a valid value looks like, for messages.
    fn expected(self) -> String {
        match self {
            Kind::Str => "a string".into(),
            Kind::Int { min, max } => format!("an integer {min}..={max}"),
            Kind::WindowMinutes => "a multiple of 10 from 10 to 60 (whole ENIN intervals)".into(),
            Kind::Float {
                min,
                min_inclusive,
                max,
            } => format!(
                "a number {} {min} and <= {max}",
                if min_inclusive { ">=" } else { ">" }
            ),
            Kind::Bool => "true or false".into(),
            Kind::OneOf(names) => format!(
                "one of {}",
                names
                    .iter()
                    .map(|n| format!("{n:?}"))
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
            Kind::StrList => "a list of strings".into(),
        }
    }
}

/// A key's value when the file does not set it.
#[derive(Clone, Copy, Debug)]
enum Preset {
    /// No default: the key must be set.
    Required,
    Str(&'static str),
    Int(i64),
    Float(f64),
    Bool(bool),
    StrList(&'static [&'static str]),
}

/// One key of the schema.
#[derive(Debug)]
struct KeySpec {
    section: &'static str,
    key: &'static str,
    kind: Kind,
    preset: Preset,
    /// Never echo the value in messages.
    secret: bool,
}

const fn spec(section: &'static str, key: &'static str, kind: Kind, preset: Preset) -> KeySpec {
    KeySpec {
        section,
        key,
        kind,
        preset,
        secret: false,
    }
}

const fn int(min: i64, max: i64) -> Kind {
    Kind::Int { min, max }
}

/// Longest accepted speed factor for replays and simulations.
const MAX_SPEED: f64 = 1e6;

/// Every key, with its type and default. `config/gateway.toml` documents each (tests check).
const SCHEMA: &[KeySpec] = &[
    spec("gateway", "id", Kind::Str, Preset::Required),
    spec("gateway", "venue", Kind::Str, Preset::Required),
    spec(
        "gateway",
        "state_dir",
        Kind::Str,
        Preset::Str("/var/lib/venuetrace-gateway"),
    ),
    spec(
        "gateway",
        "private_key",
        Kind::Str,
        Preset::Str("gateway.key"),
    ),
    spec(
        "gateway",
        "rssi_calibration_db",
        int(-30, 30),
        Preset::Int(0),
    ),
    spec("authority", "public_key", Kind::Str, Preset::Required),
    spec("scan", "source", Kind::Str, Preset::Str("bluez")),
    spec("scan", "adapter", Kind::Str, Preset::Str("")),
    spec(
        "scan",
        "bluetrace_service_uuids",
        Kind::StrList,
        Preset::StrList(&["B82AB3FC-1595-4F6A-80F0-FE094CC218F9"]),
    ),
    spec(
        "scan",
        "replay_speed",
        Kind::Float {
            min: 0.0,
            min_inclusive: true,
            max: MAX_SPEED,
        },
        Preset::Float(0.0),
    ),
    spec("sim", "seed", int(0, i64::MAX), Preset::Int(1)),
    spec("sim", "phones", int(1, 10_000_000), Preset::Int(1000)),
    spec(
        "sim",
        "hours",
        Kind::Float {
            min: 0.0,
            min_inclusive: false,
            max: 24.0 * 366.0,
        },
        Preset::Float(12.0),
    ),
    spec(
        "sim",
        "speed",
        Kind::Float {
            min: 0.0,
            min_inclusive: true,
            max: MAX_SPEED,
        },
        Preset::Float(60.0),
    ),
    spec("sim", "ground_truth", Kind::Str, Preset::Str("")),
    spec("window", "minutes", Kind::WindowMinutes, Preset::Int(10)),
    spec(
        "window",
        "max_rpis",
        int(1, 10_000_000),
        Preset::Int(50_000),
    ),
    spec("outbox", "path", Kind::Str, Preset::Str("outbox.sqlite")),
    spec("outbox", "retention_days", int(1, 365), Preset::Int(21)),
    spec(
        "outbox",
        "max_megabytes",
        int(1, 1_048_576),
        Preset::Int(512),
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
    spec(
        "mqtt",
        "resend_initial_seconds",
        int(1, 86_400),
        Preset::Int(30),
    ),
    spec(
        "mqtt",
        "resend_max_seconds",
        int(1, 86_400),
        Preset::Int(900),
    ),
    spec(
        "log",
        "level",
        Kind::OneOf(&["error", "warn", "info", "debug", "trace"]),
        Preset::Str("info"),
    ),
    spec(
        "log",
        "format",
        Kind::OneOf(&["text", "json"]),
        Preset::Str("text"),
    ),
];

fn find_spec(section: &str, key: &str) -> Option<&'static KeySpec> {
    SCHEMA.iter().find(|s| s.section == section && s.key == key)
}

// ---------------------------------------------------------------------------------------------
// Walking the file and the environment against the schema.

/// A value that passed its key's type and range check.
#[derive(Clone, Debug, PartialEq)]
enum Raw {
    Str(String),
    Int(i64),
    Float(f64),
    Bool(bool),
    List(Vec<String>),
}

/// Where a value came from.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Origin {
    Default,
    File,
    Env(String),
}

#[derive(Debug)]
struct Setting {
    raw: Raw,
    origin: Origin,
}

type KeyId = (&'static str, &'static str);

/// Collects settings (defaults, then the file, then the environment) and problems.
struct Loader {
    /// The file, as problems name it.
    file: String,
    settings: BTreeMap<KeyId, Setting>,
    /// Keys whose effective value was invalid (already reported): no further checks.
    broken: BTreeSet<KeyId>,
    overrides: Vec<String>,
    problems: Vec<ConfigProblem>,
}

impl Loader {
    fn new(file: String) -> Self {
        let settings = SCHEMA
            .iter()
            .filter_map(|spec| {
                let raw = match spec.preset {
                    Preset::Required => return None,
                    Preset::Str(s) => Raw::Str(s.to_owned()),
                    Preset::Int(i) => Raw::Int(i),
                    Preset::Float(x) => Raw::Float(x),
                    Preset::Bool(b) => Raw::Bool(b),
                    Preset::StrList(items) => {
                        Raw::List(items.iter().map(|s| (*s).to_owned()).collect())
                    }
                };
                let origin = Origin::Default;
                Some(((spec.section, spec.key), Setting { raw, origin }))
            })
            .collect();
        Self {
            file,
            settings,
            broken: BTreeSet::new(),
            overrides: Vec::new(),
            problems: Vec::new(),
        }
    }

    fn problem(&mut self, origin: &Origin, key: &str, message: String) {
        let source = match origin {
            Origin::Env(name) => name.clone(),
            Origin::Default | Origin::File => self.file.clone(),
        };
        self.problems.push(ConfigProblem {
            source,
            key: key.to_owned(),
            message,
        });
    }

    fn set(&mut self, spec: &'static KeySpec, raw: Raw, origin: Origin) {
        let id = (spec.section, spec.key);
        self.broken.remove(&id);
        self.settings.insert(id, Setting { raw, origin });
    }

    fn invalid(&mut self, spec: &'static KeySpec, origin: Origin, message: String) {
        let id = (spec.section, spec.key);
        self.problem(&origin, &format!("{}.{}", spec.section, spec.key), message);
        self.settings.remove(&id);
        self.broken.insert(id);
    }

    fn walk_file(&mut self, tree: &config::Map<String, Value>) {
        let mut sections: Vec<(&String, &Value)> = tree.iter().collect();
        sections.sort_by(|a, b| a.0.cmp(b.0));
        for (name, value) in sections {
            let Some(section) = SECTIONS.iter().copied().find(|s| s == name) else {
                let message = match SCHEMA.iter().find(|s| s.key == name) {
                    // A key written above every section header.
                    Some(spec) => format!(
                        "unknown section: {name:?} is a key of [{}], write it under that header",
                        spec.section
                    ),
                    None => format!(
                        "unknown section{}",
                        did_you_mean(name, SECTIONS.iter().copied())
                    ),
                };
                self.problem(&Origin::File, name, message);
                continue;
            };
            let ValueKind::Table(table) = &value.kind else {
                self.problem(
                    &Origin::File,
                    name,
                    format!("expected a table ([{name}]), found {}", describe(value)),
                );
                continue;
            };
            let mut keys: Vec<(&String, &Value)> = table.iter().collect();
            keys.sort_by(|a, b| a.0.cmp(b.0));
            for (key, value) in keys {
                let Some(spec) = find_spec(section, key) else {
                    let known = SCHEMA
                        .iter()
                        .filter(|s| s.section == section)
                        .map(|s| s.key);
                    let hint = did_you_mean(key, known);
                    self.problem(
                        &Origin::File,
                        &format!("{section}.{key}"),
                        format!("unknown key{hint}"),
                    );
                    continue;
                };
                match from_toml(spec, value) {
                    Ok(raw) => self.set(spec, raw, Origin::File),
                    Err(message) => self.invalid(spec, Origin::File, message),
                }
            }
        }
    }

    fn walk_env(&mut self, env: &[(String, String)]) {
        let mut vars: Vec<&(String, String)> = env
            .iter()
            .filter(|(name, _)| name.starts_with(ENV_PREFIX))
            .collect();
        vars.sort();
        for (name, text) in vars {
            let origin = Origin::Env(name.clone());
            let parts: Vec<String> = name[ENV_PREFIX.len()..]
                .split("__")
                .map(str::to_ascii_lowercase)
                .collect();
            let path = parts.join(".");
            let [section, key] = parts.as_slice() else {
                self.problem(
                    &origin,
                    &path,
                    format!("not a setting: expected {ENV_PREFIX}SECTION__KEY"),
                );
                continue;
            };
            if !SECTIONS.contains(&section.as_str()) {
                let hint = did_you_mean(section, SECTIONS.iter().copied());
                self.problem(&origin, section, format!("unknown section{hint}"));
                continue;
            }
            let Some(spec) = find_spec(section, key) else {
                let known = SCHEMA
                    .iter()
                    .filter(|s| s.section == section)
                    .map(|s| s.key);
                let hint = did_you_mean(key, known);
                self.problem(&origin, &path, format!("unknown key{hint}"));
                continue;
            };
            match from_env(spec, text) {
                Ok(raw) => {
                    self.set(spec, raw, origin);
                    self.overrides.push(name.clone());
                }
                Err(message) => self.invalid(spec, origin, message),
            }
        }
    }

    fn check_required(&mut self) {
        for spec in SCHEMA {
            let id = (spec.section, spec.key);
            if matches!(spec.preset, Preset::Required)
                && !self.settings.contains_key(&id)
                && !self.broken.contains(&id)
            {
                self.problem(
                    &Origin::File,
                    &format!("{}.{}", spec.section, spec.key),
                    "missing: this key is required".into(),
                );
            }
        }
    }

    /// Reports a problem with the effective value of `section.key`, naming where it came from.
    fn problem_at(&mut self, section: &'static str, key: &'static str, message: String) {
        let origin = self
            .settings
            .get(&(section, key))
            .map_or(Origin::File, |s| s.origin.clone());
        self.problem(&origin, &format!("{section}.{key}"), message);
        self.broken.insert((section, key));
    }

    fn string(&self, section: &'static str, key: &'static str) -> Option<String> {
        match self.settings.get(&(section, key)) {
            Some(Setting {
                raw: Raw::Str(s), ..
            }) => Some(s.clone()),
            _ => None,
        }
    }

    fn int(&self, section: &'static str, key: &'static str) -> Option<i64> {
        match self.settings.get(&(section, key)) {
            Some(Setting {
                raw: Raw::Int(i), ..
            }) => Some(*i),
            _ => None,
        }
    }

    fn float(&self, section: &'static str, key: &'static str) -> Option<f64> {
        match self.settings.get(&(section, key)) {
            Some(Setting {
                raw: Raw::Float(x), ..
            }) => Some(*x),
            _ => None,
        }
    }

    fn boolean(&self, section: &'static str, key: &'static str) -> Option<bool> {
        match self.settings.get(&(section, key)) {
            Some(Setting {
                raw: Raw::Bool(b), ..
            }) => Some(*b),
            _ => None,
        }
    }

    fn list(&self, section: &'static str, key: &'static str) -> Option<Vec<String>> {
        match self.settings.get(&(section, key)) {
            Some(Setting {
                raw: Raw::List(items),
                ..
            }) => Some(items.clone()),
            _ => None,
        }
    }

    /// Whether `section.key` was set by the file or the environment (not left at its default).
    fn is_set(&self, section: &'static str, key: &'static str) -> bool {
        self.settings
            .get(&(section, key))
            .is_some_and(|s| s.origin != Origin::Default)
    }

    /// A string that must not be empty; `Some("")` never comes back.
    fn non_empty(&mut self, section: &'static str, key: &'static str) -> Option<String> {
        let value = self.string(section, key)?;
        if value.is_empty() {
            self.problem_at(section, key, "must not be empty".into());
            return None;
        }
        Some(value)
    }

    /// A string where empty means "not set".
    fn optional(&self, section: &'static str, key: &'static str) -> Option<Option<String>> {
        self.string(section, key)
            .map(|s| (!s.is_empty()).then_some(s))
    }

    /// A gateway or venue id: 1-64 characters of `A-Z a-z 0-9 . _ -`.
    fn identifier(&mut self, section: &'static str, key: &'static str) -> Option<String> {
        let value = self.string(section, key)?;
        let valid = (1..=64).contains(&value.len())
            && value
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'));
        if !valid {
            self.problem_at(
                section,
                key,
                format!("invalid value {value:?}: expected 1-64 characters of A-Z a-z 0-9 . _ -"),
            );
            return None;
        }
        Some(value)
    }

    /// Builds the typed configuration, reporting every semantic problem. `None` if any value
    /// was missing or invalid (each already reported).
    fn build(&mut self, path: &Path, env: &[(String, String)]) -> Option<GatewayConfig> {
        let config_dir = path.parent().unwrap_or(Path::new(""));
        let id = self.identifier("gateway", "id");
        let venue = self.identifier("gateway", "venue");
        let state_dir = self.non_empty("gateway", "state_dir").map(PathBuf::from);
        let key_name = self.non_empty("gateway", "private_key");
        let credentials = env
            .iter()
            .find(|(name, value)| name == CREDENTIALS_ENV && !value.is_empty());
        let private_key = match (credentials, &state_dir, key_name) {
            (Some((_, dir)), _, _) => Some(Path::new(dir).join("gateway.key")),
            // `join` keeps an absolute `private_key` as it is.
            (None, Some(state_dir), Some(name)) => Some(state_dir.join(name)),
            (None, _, _) => None,
        };
        let rssi_calibration_db = self
            .int("gateway", "rssi_calibration_db")
            .and_then(|v| i8::try_from(v).ok());
        let public_key = self.public_key(config_dir);

        let source = self.scan_source();
        let adapter = self.optional("scan", "adapter");
        let uuids = self.service_uuids();
        let replay_speed = self.float("scan", "replay_speed");

        let seed = self.int("sim", "seed").and_then(|v| u64::try_from(v).ok());
        let phones = self
            .int("sim", "phones")
            .and_then(|v| u32::try_from(v).ok());
        let hours = self.float("sim", "hours");
        let speed = self.float("sim", "speed");
        let ground_truth = self
            .optional("sim", "ground_truth")
            .map(|p| p.map(PathBuf::from));

        let minutes = self
            .int("window", "minutes")
            .and_then(|v| u32::try_from(v).ok());
        let max_rpis = self
            .int("window", "max_rpis")
            .and_then(|v| u32::try_from(v).ok());

        let outbox_path = match (&state_dir, self.non_empty("outbox", "path")) {
            (Some(state_dir), Some(path)) => Some(state_dir.join(path)),
            _ => None,
        };
        let retention = self
            .int("outbox", "retention_days")
            .and_then(|d| u64::try_from(d).ok())
            .map(|d| Duration::from_secs(d * 86_400));
        let max_bytes = self
            .int("outbox", "max_megabytes")
            .and_then(|m| u64::try_from(m).ok())
            .map(|m| m << 20);

        let mqtt = self.mqtt(config_dir, id.as_deref());

        let level = self.string("log", "level").map(|l| match l.as_str() {
            "error" => LogLevel::Error,
            "warn" => LogLevel::Warn,
            "debug" => LogLevel::Debug,
            "trace" => LogLevel::Trace,
            _ => LogLevel::Info,
        });
        let format = self.string("log", "format").map(|f| match f.as_str() {
            "json" => LogFormat::Json,
            _ => LogFormat::Text,
        });

        Some(GatewayConfig {
            file: path.to_owned(),
            overrides: self.overrides.clone(),
            gateway: GatewaySettings {
                id: id?,
                venue: venue?,
                state_dir: state_dir?,
                private_key: private_key?,
                rssi_calibration_db: rssi_calibration_db?,
            },
            authority: AuthoritySettings {
                public_key: public_key?,
            },
            scan: ScanSettings {
                source: source?,
                adapter: adapter?,
                bluetrace_service_uuids: uuids?,
                replay_speed: replay_speed?,
            },
            sim: SimSettings {
                seed: seed?,
                phones: phones?,
                hours: hours?,
                speed: speed?,
                ground_truth: ground_truth?,
            },
            window: WindowSettings {
                minutes: minutes?,
                max_rpis: max_rpis?,
            },
            outbox: OutboxSettings {
                path: outbox_path?,
                retention: retention?,
                max_bytes: max_bytes?,
            },
            mqtt: mqtt?,
            log: LogSettings {
                level: level?,
                format: format?,
            },
        })
    }

    /// `authority.public_key`: base64 of 32 bytes, or a file (relative to the configuration
    /// file's directory) holding that.
    fn public_key(&mut self, config_dir: &Path) -> Option<[u8; 32]> {
        let value = self.string("authority", "public_key")?;
        let b64 = base64::engine::general_purpose::STANDARD;
        if let Ok(Ok(key)) = b64.decode(value.trim()).map(<[u8; 32]>::try_from) {
            return Some(key);
        }
        if value.trim().is_empty() {
            self.problem_at("authority", "public_key", "must not be empty".into());
            return None;
        }
        let file = config_dir.join(value.trim());
        let message = match std::fs::read_to_string(&file) {
            Ok(text) => match b64.decode(text.trim()).map(<[u8; 32]>::try_from) {
                Ok(Ok(key)) => return Some(key),
                Ok(Err(bytes)) => format!(
                    "{} holds {} bytes of base64: an X25519 public key is 32",
                    file.display(),
                    bytes.len()
                ),
                Err(e) => format!(
                    "{} does not hold a base64 X25519 public key: {e}",
                    file.display()
                ),
            },
            Err(e) => format!(
                "neither base64 of a 32-byte X25519 public key nor a readable file ({}: {e})",
                file.display()
            ),
        };
        self.problem_at("authority", "public_key", message);
        None
    }

    fn scan_source(&mut self) -> Option<ScanSource> {
        let value = self.string("scan", "source")?;
        match value.as_str() {
            "bluez" => Some(ScanSource::Bluez),
            "sim" => Some(ScanSource::Sim),
            other => match other.strip_prefix("replay:") {
                Some(path) if !path.is_empty() => Some(ScanSource::Replay(PathBuf::from(path))),
                _ => {
                    self.problem_at(
                        "scan",
                        "source",
                        format!(
                            "invalid value {value:?}: expected \"bluez\", \"sim\" or \"replay:PATH\""
                        ),
                    );
                    None
                }
            },
        }
    }

    fn service_uuids(&mut self) -> Option<Vec<ServiceUuid>> {
        let items = self.list("scan", "bluetrace_service_uuids")?;
        let mut uuids = Vec::with_capacity(items.len());
        let mut bad = Vec::new();
        for item in &items {
            match ServiceUuid::parse(item) {
                Some(uuid) => uuids.push(uuid),
                None => bad.push(format!("{item:?}")),
            }
        }
        if !bad.is_empty() {
            self.problem_at(
                "scan",
                "bluetrace_service_uuids",
                format!(
                    "invalid value {}: expected service UUIDs like \
                     \"B82AB3FC-1595-4F6A-80F0-FE094CC218F9\"",
                    bad.join(", ")
                ),
            );
            return None;
        }
        Some(uuids)
    }

    /// A path where empty means "not set"; relative paths are relative to `config_dir`.
    fn config_file(&self, config_dir: &Path, key: &'static str) -> Option<Option<PathBuf>> {
        self.optional("mqtt", key)
            .map(|p| p.map(|p| config_dir.join(p)))
    }

    fn mqtt(&mut self, config_dir: &Path, gateway_id: Option<&str>) -> Option<MqttSettings> {
        let host = self.non_empty("mqtt", "host");
        let port = self.int("mqtt", "port").and_then(|p| u16::try_from(p).ok());
        let client_id = match self.optional("mqtt", "client_id") {
            Some(Some(id)) => Some(id),
            Some(None) => gateway_id.map(|id| format!("venuetrace-gw-{id}")),
            None => None,
        };
        let tls = self.boolean("mqtt", "tls");
        let ca_file = self.config_file(config_dir, "ca_file");
        let client_cert = self.config_file(config_dir, "client_cert");
        let client_key = self.config_file(config_dir, "client_key");
        if tls == Some(false) {
            for key in ["ca_file", "client_cert", "client_key"] {
                if self.optional("mqtt", key).is_some_and(|v| v.is_some()) {
                    self.problem_at("mqtt", key, "has no effect unless mqtt.tls = true".into());
                }
            }
        }
        let client_auth = match (client_cert.clone(), client_key.clone()) {
            (Some(Some(cert)), Some(Some(key))) => Some(Some(ClientAuth { cert, key })),
            (Some(None), Some(None)) => Some(None),
            (Some(Some(_)), Some(None)) => {
                self.problem_at("mqtt", "client_cert", "needs mqtt.client_key too".into());
                None
            }
            (Some(None), Some(Some(_))) => {
                self.problem_at("mqtt", "client_key", "needs mqtt.client_cert too".into());
                None
            }
            _ => None,
        };
        // No early return before every check has run: each problem must be reported.
        let tls = match (tls, ca_file, client_auth) {
            (Some(true), Some(ca_file), Some(client_auth)) => Some(Some(TlsSettings {
                ca_file,
                client_auth,
            })),
            (Some(false), _, _) => Some(None),
            _ => None,
        };

        let username = self.optional("mqtt", "username");
        let password = self.optional("mqtt", "password");
        let password_file = self.config_file(config_dir, "password_file");
        let password = match (password, password_file) {
            (Some(Some(_)), Some(Some(_))) => {
                self.problem_at(
                    "mqtt",
                    "password_file",
                    "set mqtt.password or mqtt.password_file, not both".into(),
                );
                None
            }
            (Some(Some(secret)), Some(None)) => Some(Some(MqttPassword::Inline(Secret(secret)))),
            (Some(None), Some(Some(file))) => Some(Some(MqttPassword::File(file))),
            (Some(None), Some(None)) => Some(None),
            _ => None,
        };
        if let (Some(None), Some(Some(_))) = (&username, &password) {
            let key = if self.is_set("mqtt", "password") {
                "password"
            } else {
                "password_file"
            };
            self.problem_at("mqtt", key, "a password needs mqtt.username".into());
        }

        let keep_alive = self
            .int("mqtt", "keep_alive_seconds")
            .and_then(|s| u64::try_from(s).ok())
            .map(Duration::from_secs);
        let initial = self
            .int("mqtt", "resend_initial_seconds")
            .and_then(|s| u64::try_from(s).ok());
        let max = self
            .int("mqtt", "resend_max_seconds")
            .and_then(|s| u64::try_from(s).ok());
        if let (Some(initial), Some(max)) = (initial, max)
            && initial > max
        {
            let key = if self.is_set("mqtt", "resend_initial_seconds") {
                "resend_initial_seconds"
            } else {
                "resend_max_seconds"
            };
            self.problem_at(
                "mqtt",
                key,
                format!(
                    "resend_initial_seconds ({initial}) is more than resend_max_seconds ({max})"
                ),
            );
            return None;
        }
        Some(MqttSettings {
            host: host?,
            port: port?,
            client_id: client_id?,
            tls: tls?,
            username: username?,
            password: password?,
            keep_alive: keep_alive?,
            resend: Backoff {
                initial: Duration::from_secs(initial?),
                max: Duration::from_secs(max?),
            },
        })
    }
}

/// Converts a value from the file to the key's type, checking its range.
fn from_toml(spec: &KeySpec, value: &Value) -> Result<Raw, String> {
    let raw = match (spec.kind, &value.kind) {
        (Kind::Str | Kind::OneOf(_), ValueKind::String(s)) => Raw::Str(s.clone()),
        (Kind::Int { .. } | Kind::WindowMinutes, ValueKind::I64(i)) => Raw::Int(*i),
        (Kind::Float { .. }, ValueKind::Float(x)) => Raw::Float(*x),
        (Kind::Float { .. }, ValueKind::I64(i)) => Raw::Float(*i as f64),
        (Kind::Bool, ValueKind::Boolean(b)) => Raw::Bool(*b),
        (Kind::StrList, ValueKind::Array(items)) => {
            let mut list = Vec::with_capacity(items.len());
            for item in items {
                match &item.kind {
                    ValueKind::String(s) => list.push(s.clone()),
                    _ => return Err(mismatch(spec, item)),
                }
            }
            Raw::List(list)
        }
        _ => return Err(mismatch(spec, value)),
    };
    check_range(spec, raw)
}

/// Parses an environment variable's text as the key's type, checking its range.
fn from_env(spec: &KeySpec, text: &str) -> Result<Raw, String> {
    let invalid = || {
        format!(
            "invalid value {}: expected {}",
            if spec.secret {
                "(hidden)".to_owned()
            } else {
                format!("{text:?}")
            },
            spec.kind.expected()
        )
    };
    let raw = match spec.kind {
        Kind::Str | Kind::OneOf(_) => Raw::Str(text.to_owned()),
        Kind::Int { .. } | Kind::WindowMinutes => {
            Raw::Int(text.trim().parse().map_err(|_| invalid())?)
        }
        Kind::Float { .. } => Raw::Float(text.trim().parse().map_err(|_| invalid())?),
        Kind::Bool => match text.trim().to_ascii_lowercase().as_str() {
            "true" => Raw::Bool(true),
            "false" => Raw::Bool(false),
            _ => return Err(invalid()),
        },
        Kind::StrList => Raw::List(
            text.split(',')
                .map(str::trim)
                .filter(|s| !s.is_empty())
                .map(str::to_owned)
                .collect(),
        ),
    };
    check_range(spec, raw)
}

/// The range checks shared by file and environment values.
fn check_range(spec: &KeySpec, raw: Raw) -> Result<Raw, String> {
    let out_of_range =
        |shown: String| format!("invalid value {shown}: expected {}", spec.kind.expected());
    match (spec.kind, &raw) {
        (Kind::Int { min, max }, Raw::Int(i)) if !(min..=max).contains(i) => {
            Err(out_of_range(i.to_string()))
        }
        (Kind::WindowMinutes, Raw::Int(m)) if m % 10 != 0 => Err(format!(
            "{m} does not divide into whole 10-minute ENIN intervals"
        )),
        (Kind::WindowMinutes, Raw::Int(m)) if !(10..=60).contains(m) => {
            Err(out_of_range(m.to_string()))
        }
        (
            Kind::Float {
                min,
                min_inclusive,
                max,
            },
            Raw::Float(x),
        ) if !x.is_finite() || *x < min || (*x == min && !min_inclusive) || *x > max => {
            Err(out_of_range(x.to_string()))
        }
        (Kind::OneOf(names), Raw::Str(s)) if !names.contains(&s.as_str()) => {
            Err(out_of_range(format!("{s:?}")))
        }
        _ => Ok(raw),
    }
}

/// The message for a value of the wrong type.
fn mismatch(spec: &KeySpec, value: &Value) -> String {
    let expected = spec.kind.expected();
    let shown = match &value.kind {
        _ if spec.secret => Some("(hidden)".to_owned()),
        ValueKind::String(s) => Some(format!("{s:?}")),
        ValueKind::I64(i) => Some(i.to_string()),
        ValueKind::I128(i) => Some(i.to_string()),
        ValueKind::U64(i) => Some(i.to_string()),
        ValueKind::U128(i) => Some(i.to_string()),
        ValueKind::Float(x) => Some(x.to_string()),
        ValueKind::Boolean(b) => Some(b.to_string()),
        ValueKind::Nil | ValueKind::Table(_) | ValueKind::Array(_) => None,
    };
    match shown {
        Some(shown) => format!("invalid value {shown}: expected {expected}"),
        None => format!("expected {expected}, found {}", describe(value)),
    }
}

/// What kind of value this is, for messages.
fn describe(value: &Value) -> &'static str {
    match value.kind {
        ValueKind::Nil => "nothing",
        ValueKind::Boolean(_) => "a boolean",
        ValueKind::I64(_) | ValueKind::I128(_) | ValueKind::U64(_) | ValueKind::U128(_) => {
            "an integer"
        }
        ValueKind::Float(_) => "a number",
        ValueKind::String(_) => "a string",
        ValueKind::Table(_) => "a table",
        ValueKind::Array(_) => "a list",
    }
}

/// ` (did you mean "port"?)` when a known name is a near miss of `name` (one edit, or two for
/// names of six characters or more), else empty.
fn did_you_mean<'a>(name: &str, known: impl Iterator<Item = &'a str>) -> String {
    let allowed = if name.chars().count() >= 6 { 2 } else { 1 };
    known
        .map(|k| (edit_distance(name, k), k))
        .filter(|(d, _)| *d <= allowed)
        .min()
        .map_or(String::new(), |(_, k)| format!(" (did you mean {k:?}?)"))
}

/// Edit distance by characters, counting a swap of two neighbours as one edit (optimal string
/// alignment), so `prot` is one edit from `port`.
fn edit_distance(a: &str, b: &str) -> usize {
    let a: Vec<char> = a.chars().collect();
    let b: Vec<char> = b.chars().collect();
    // d[i][j]: distance between a[..i] and b[..j].
    let mut d = vec![vec![0usize; b.len() + 1]; a.len() + 1];
    for (i, row) in d.iter_mut().enumerate() {
        row[0] = i;
    }
    for (j, cell) in d[0].iter_mut().enumerate() {
        *cell = j;
    }
    for i in 1..=a.len() {
        for j in 1..=b.len() {
            let cost = usize::from(a[i - 1] != b[j - 1]);
            let mut best = (d[i - 1][j] + 1)
                .min(d[i][j - 1] + 1)
                .min(d[i - 1][j - 1] + cost);
            if i > 1 && j > 1 && a[i - 1] == b[j - 2] && a[i - 2] == b[j - 1] {
                best = best.min(d[i - 2][j - 2] + 1);
            }
            d[i][j] = best;
        }
    }
    d[a.len()][b.len()]
}

#[cfg(test)]
mod tests {
    use super::*;

    const KEY_B64: &str = "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=";

    fn key_bytes() -> [u8; 32] {
        std::array::from_fn(|i| i as u8)
    }

    fn env(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect()
    }

    /// The three required keys, given through the environment.
    fn required() -> Vec<(String, String)> {
        env(&[
            ("VENUETRACE_GATEWAY__GATEWAY__ID", "gw-cafe-central-1"),
            ("VENUETRACE_GATEWAY__GATEWAY__VENUE", "cafe-central"),
            ("VENUETRACE_GATEWAY__AUTHORITY__PUBLIC_KEY", KEY_B64),
        ])
    }

    /// The required keys plus `extra`, which replaces a required one of the same name.
    fn with_required(extra: &[(&str, &str)]) -> Vec<(String, String)> {
        let mut all = required();
        all.retain(|(name, _)| !extra.iter().any(|(n, _)| n == name));
        all.extend(env(extra));
        all
    }

    /// Writes `text` as `gateway.toml` in a fresh directory and loads it.
    fn load_text(
        text: &str,
        env: &[(String, String)],
    ) -> (tempfile::TempDir, Result<GatewayConfig, ConfigErrors>) {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("gateway.toml");
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

    fn expect_errors(result: Result<GatewayConfig, ConfigErrors>) -> ConfigErrors {
        match result {
            Ok(config) => panic!("expected problems, loaded {config:?}"),
            Err(errors) => errors,
        }
    }

    fn expect_config(result: Result<GatewayConfig, ConfigErrors>) -> GatewayConfig {
        result.unwrap_or_else(|errors| panic!("expected a configuration, got:\n{errors}"))
    }

    fn shipped_file() -> PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR")).join("config/gateway.toml")
    }

    /// `config/gateway.toml` lists every key of the schema under its section (commented or
    /// not), and nothing that is not a key: the documentation cannot drift from the code.
    #[test]
    fn shipped_file_documents_every_key() {
        let text = std::fs::read_to_string(shipped_file()).expect("config/gateway.toml");
        let mut section = String::new();
        let mut documented = BTreeSet::new();
        for line in text.lines() {
            let line = line.trim();
            if let Some(name) = line.strip_prefix('[').and_then(|l| l.strip_suffix(']')) {
                section = name.to_owned();
                continue;
            }
            let body = line.strip_prefix('#').unwrap_or(line).trim_start();
            // `# key = value` lines: a bare identifier, then " = ".
            if let Some((key, _)) = body.split_once(" = ")
                && !key.is_empty()
                && key.bytes().all(|b| b.is_ascii_lowercase() || b == b'_')
            {
                documented.insert(format!("{section}.{key}"));
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

    /// The shipped file plus the required values loads, and gives the documented defaults.
    #[test]
    fn shipped_file_with_required_values_loads() {
        let config = expect_config(load(&shipped_file(), &required()));
        assert_eq!(
            config.gateway,
            GatewaySettings {
                id: "gw-cafe-central-1".into(),
                venue: "cafe-central".into(),
                state_dir: "/var/lib/venuetrace-gateway".into(),
                private_key: "/var/lib/venuetrace-gateway/gateway.key".into(),
                rssi_calibration_db: 0,
            }
        );
        assert_eq!(config.authority.public_key, key_bytes());
        assert_eq!(
            config.scan,
            ScanSettings {
                source: ScanSource::Bluez,
                adapter: None,
                bluetrace_service_uuids: vec![ServiceUuid(0xB82AB3FC_1595_4F6A_80F0_FE094CC218F9)],
                replay_speed: 0.0,
            }
        );
        assert_eq!(
            config.sim,
            SimSettings {
                seed: 1,
                phones: 1000,
                hours: 12.0,
                speed: 60.0,
                ground_truth: None,
            }
        );
        assert_eq!(
            config.window,
            WindowSettings {
                minutes: 10,
                max_rpis: 50_000
            }
        );
        assert_eq!(config.window.intervals(), 1);
        assert_eq!(
            config.outbox,
            OutboxSettings {
                path: "/var/lib/venuetrace-gateway/outbox.sqlite".into(),
                retention: Duration::from_secs(21 * 86_400),
                max_bytes: 512 << 20,
            }
        );
        assert_eq!(config.outbox.options(), OutboxOptions::default());
        assert_eq!(
            config.mqtt,
            MqttSettings {
                host: "localhost".into(),
                port: 1883,
                client_id: "venuetrace-gw-gw-cafe-central-1".into(),
                tls: None,
                username: None,
                password: None,
                keep_alive: Duration::from_secs(30),
                resend: Backoff {
                    initial: Duration::from_secs(30),
                    max: Duration::from_secs(900),
                },
            }
        );
        assert_eq!(
            config.log,
            LogSettings {
                level: LogLevel::Info,
                format: LogFormat::Text
            }
        );
        assert_eq!(config.overrides.len(), 3);
    }

    /// The values written in the shipped file's comments are the real defaults: uncommenting
    /// every `# key = value` line changes nothing (and the example required values load).
    #[test]
    fn documented_defaults_are_the_defaults() {
        let text = std::fs::read_to_string(shipped_file()).expect("config/gateway.toml");
        let uncommented: String = text
            .lines()
            .map(|line| match line.strip_prefix("# ") {
                Some(rest)
                    if rest.split_once(" = ").is_some_and(|(k, _)| {
                        k.bytes().all(|b| b.is_ascii_lowercase() || b == b'_')
                    }) =>
                {
                    rest
                }
                _ => line,
            })
            .map(|line| format!("{line}\n"))
            .collect();
        let (_dir, explicit) = load_text(&uncommented, &[]);
        let explicit = expect_config(explicit);
        let defaults = expect_config(load(&shipped_file(), &required()));
        assert_eq!(
            GatewayConfig {
                file: PathBuf::new(),
                overrides: Vec::new(),
                ..explicit
            },
            GatewayConfig {
                file: PathBuf::new(),
                overrides: Vec::new(),
                ..defaults
            }
        );
    }

    /// Every problem in a file is reported in one go, each with the file and the key path:
    /// unknown sections and keys (with a suggestion when close), wrong types, out-of-range
    /// values, a window that is not whole ENIN intervals, and missing required keys.
    #[test]
    fn every_problem_is_reported_at_once() {
        let text = r#"
[gateway]
venue = "cafe"
rssi_calibration_db = 31

[mqtt]
prot = 1884
port = "x"
tls = "yes"

[window]
minutes = 7

[wndow]
minutes = 10
"#;
        let (dir, result) = load_text(text, &[]);
        let errors = expect_errors(result);
        let file = dir.path().join("gateway.toml").display().to_string();
        assert!(errors.problems.iter().all(|p| p.source == file), "{errors}");
        assert_eq!(
            problems(&errors),
            [
                "gateway.rssi_calibration_db: invalid value 31: expected an integer -30..=30",
                "mqtt.port: invalid value \"x\": expected an integer 1..=65535",
                "mqtt.prot: unknown key (did you mean \"port\"?)",
                "mqtt.tls: invalid value \"yes\": expected true or false",
                "window.minutes: 7 does not divide into whole 10-minute ENIN intervals",
                "wndow: unknown section (did you mean \"window\"?)",
                "gateway.id: missing: this key is required",
                "authority.public_key: missing: this key is required",
            ]
        );
        let shown = errors.to_string();
        assert_eq!(shown.lines().count(), 8);
        assert!(
            shown.contains(&format!(
                "{file}: mqtt.port: invalid value \"x\": expected an integer 1..=65535"
            )),
            "{shown}"
        );
    }

    /// Environment variables override the file, are parsed as the key's type, and are listed
    /// as overrides; problems with them name the variable, not the file.
    #[test]
    fn environment_overrides_the_file() {
        let text = "[mqtt]\nport = 1884\nhost = \"broker.example\"\n";
        let (_dir, result) = load_text(
            text,
            &with_required(&[
                ("VENUETRACE_GATEWAY__MQTT__PORT", "8883"),
                ("VENUETRACE_GATEWAY__MQTT__TLS", "true"),
                ("VENUETRACE_GATEWAY__WINDOW__MINUTES", "30"),
                ("VENUETRACE_GATEWAY__SCAN__REPLAY_SPEED", "2.5"),
                (
                    "VENUETRACE_GATEWAY__SCAN__BLUETRACE_SERVICE_UUIDS",
                    "fd6f, B82AB3FC-1595-4F6A-80F0-FE094CC218F9",
                ),
                ("VENUETRACE_GATEWAY__MQTT__PASSWORD", "0123"),
                ("VENUETRACE_GATEWAY__MQTT__USERNAME", "gw"),
                ("OTHER_VARIABLE", "ignored"),
            ]),
        );
        let config = expect_config(result);
        assert_eq!(config.mqtt.host, "broker.example");
        assert_eq!(config.mqtt.port, 8883);
        assert_eq!(
            config.mqtt.tls,
            Some(TlsSettings {
                ca_file: None,
                client_auth: None
            })
        );
        assert_eq!(config.window.minutes, 30);
        assert_eq!(config.scan.replay_speed, 2.5);
        assert_eq!(config.scan.bluetrace_service_uuids.len(), 2);
        // A string stays a string: no leading zero lost.
        assert_eq!(
            config.mqtt.password,
            Some(MqttPassword::Inline(Secret("0123".into())))
        );
        assert!(
            config
                .overrides
                .contains(&"VENUETRACE_GATEWAY__MQTT__PORT".to_owned())
        );
        assert!(config.summary().contains("VENUETRACE_GATEWAY__MQTT__PORT"));

        let (_dir, result) = load_text(
            text,
            &with_required(&[
                ("VENUETRACE_GATEWAY__MQTT__PORT", "x"),
                ("VENUETRACE_GATEWAY__MQTT__PROT", "1"),
                ("VENUETRACE_GATEWAY__MQTT", "1"),
                ("VENUETRACE_GATEWAY__MQTTT__PORT", "1"),
                ("VENUETRACE_GATEWAY__LOG__LEVEL", "verbose"),
            ]),
        );
        let errors = expect_errors(result);
        let lines: Vec<String> = errors.problems.iter().map(ToString::to_string).collect();
        assert_eq!(
            lines,
            [
                "VENUETRACE_GATEWAY__LOG__LEVEL: log.level: invalid value \"verbose\": expected \
                 one of \"error\", \"warn\", \"info\", \"debug\", \"trace\"",
                "VENUETRACE_GATEWAY__MQTT: mqtt: not a setting: expected \
                 VENUETRACE_GATEWAY__SECTION__KEY",
                "VENUETRACE_GATEWAY__MQTTT__PORT: mqttt: unknown section (did you mean \"mqtt\"?)",
                "VENUETRACE_GATEWAY__MQTT__PORT: mqtt.port: invalid value \"x\": expected an \
                 integer 1..=65535",
                "VENUETRACE_GATEWAY__MQTT__PROT: mqtt.prot: unknown key (did you mean \"port\"?)",
            ]
        );
    }

    /// A missing file is one problem naming the path; a file that is not TOML is one problem
    /// saying where it breaks.
    #[test]
    fn unreadable_or_malformed_files_are_one_problem() {
        let errors = expect_errors(load(Path::new("/nonexistent/gateway.toml"), &required()));
        assert_eq!(errors.problems.len(), 1);
        let shown = errors.to_string();
        assert!(
            shown.starts_with("/nonexistent/gateway.toml: cannot read the configuration file"),
            "{shown}"
        );

        let (_dir, result) = load_text("[mqtt]\nport = \n", &required());
        let errors = expect_errors(result);
        assert_eq!(errors.problems.len(), 1);
        assert!(
            errors.problems[0].message.starts_with("not valid TOML"),
            "{errors}"
        );
        assert!(errors.problems[0].message.contains("line 2"), "{errors}");
    }

    /// The file's top level holds sections only, and each section is a table.
    #[test]
    fn top_level_holds_sections_only() {
        let (_dir, result) = load_text("id = \"gw\"\nlog = 3\n", &required());
        assert_eq!(
            problems(&expect_errors(result)),
            [
                "id: unknown section: \"id\" is a key of [gateway], write it under that header",
                "log: expected a table ([log]), found an integer",
            ]
        );
    }

    /// The window is whole ENIN intervals: multiples of 10 from 10 to 60 minutes.
    #[test]
    fn window_minutes_are_whole_intervals() {
        for (minutes, expected) in [
            ("10", Ok(10)),
            ("60", Ok(60)),
            (
                "25",
                Err("25 does not divide into whole 10-minute ENIN intervals"),
            ),
            (
                "70",
                Err(
                    "invalid value 70: expected a multiple of 10 from 10 to 60 (whole ENIN intervals)",
                ),
            ),
            (
                "0",
                Err(
                    "invalid value 0: expected a multiple of 10 from 10 to 60 (whole ENIN intervals)",
                ),
            ),
        ] {
            let (_dir, result) =
                load_text(&format!("[window]\nminutes = {minutes}\n"), &required());
            match expected {
                Ok(m) => assert_eq!(expect_config(result).window.minutes, m),
                Err(message) => {
                    assert_eq!(
                        problems(&expect_errors(result)),
                        [format!("window.minutes: {message}")]
                    )
                }
            }
        }
    }

    /// Ids are 1-64 characters of A-Z a-z 0-9 . _ -; the client id defaults from the gateway id.
    #[test]
    fn ids_have_a_safe_charset() {
        let (_dir, result) = load_text(
            "[gateway]\nid = \"gw 1\"\nvenue = \"\"\n",
            &env(&[("VENUETRACE_GATEWAY__AUTHORITY__PUBLIC_KEY", KEY_B64)]),
        );
        assert_eq!(
            problems(&expect_errors(result)),
            [
                "gateway.id: invalid value \"gw 1\": expected 1-64 characters of A-Z a-z 0-9 . _ -",
                "gateway.venue: invalid value \"\": expected 1-64 characters of A-Z a-z 0-9 . _ -",
            ]
        );
        let long = "a".repeat(65);
        let (_dir, result) = load_text(
            "",
            &with_required(&[("VENUETRACE_GATEWAY__GATEWAY__ID", &long)]),
        );
        assert_eq!(expect_errors(result).problems.len(), 1);
    }

    /// The authority key is base64 of 32 bytes, inline or in a file next to the configuration;
    /// anything else says what is wrong.
    #[test]
    fn authority_key_inline_or_from_a_file() {
        let dir = tempfile::tempdir().expect("tempdir");
        std::fs::write(dir.path().join("authority.pub"), format!("{KEY_B64}\n")).expect("writes");
        std::fs::write(dir.path().join("short.pub"), "AAAA\n").expect("writes");
        let path = dir.path().join("gateway.toml");
        let ids = env(&[
            ("VENUETRACE_GATEWAY__GATEWAY__ID", "gw-1"),
            ("VENUETRACE_GATEWAY__GATEWAY__VENUE", "v"),
        ]);
        let with_key = |key: &str| {
            std::fs::write(&path, format!("[authority]\npublic_key = {key:?}\n")).expect("writes");
            load(&path, &ids)
        };
        assert_eq!(
            expect_config(with_key("authority.pub"))
                .authority
                .public_key,
            key_bytes()
        );
        assert_eq!(
            expect_config(with_key(KEY_B64)).authority.public_key,
            key_bytes()
        );
        let errors = expect_errors(with_key("short.pub"));
        assert!(
            errors.problems[0].message.contains("holds 3 bytes"),
            "{errors}"
        );
        let errors = expect_errors(with_key("missing.pub"));
        assert!(
            errors.problems[0]
                .message
                .starts_with("neither base64 of a 32-byte X25519 public key nor a readable file"),
            "{errors}"
        );
    }

    /// Paths: private key and outbox relative to the state directory unless absolute, TLS
    /// files relative to the configuration file; systemd credentials win for the private key.
    #[test]
    fn paths_resolve_as_documented() {
        let text = "[gateway]\nstate_dir = \"/srv/gw\"\nprivate_key = \"keys/gw.key\"\n\
                    [outbox]\npath = \"/data/outbox.sqlite\"\n\
                    [mqtt]\ntls = true\nca_file = \"ca.pem\"\nclient_cert = \"/etc/c.pem\"\nclient_key = \"k.pem\"\n";
        let (dir, result) = load_text(text, &required());
        let config = expect_config(result);
        assert_eq!(config.gateway.private_key, Path::new("/srv/gw/keys/gw.key"));
        assert_eq!(config.outbox.path, Path::new("/data/outbox.sqlite"));
        assert_eq!(
            config.mqtt.tls,
            Some(TlsSettings {
                ca_file: Some(dir.path().join("ca.pem")),
                client_auth: Some(ClientAuth {
                    cert: "/etc/c.pem".into(),
                    key: dir.path().join("k.pem"),
                }),
            })
        );
        let (_dir, result) = load_text(
            text,
            &with_required(&[(
                CREDENTIALS_ENV,
                "/run/credentials/venuetrace-gateway.service",
            )]),
        );
        assert_eq!(
            expect_config(result).gateway.private_key,
            Path::new("/run/credentials/venuetrace-gateway.service/gateway.key")
        );
    }

    /// Settings that contradict each other are reported at the key that was set.
    #[test]
    fn contradictions_are_reported() {
        let text = "[mqtt]\nca_file = \"ca.pem\"\nclient_cert = \"c.pem\"\npassword = \"p\"\n\
                    password_file = \"p.txt\"\nresend_initial_seconds = 1000\n";
        let (_dir, result) = load_text(text, &required());
        assert_eq!(
            problems(&expect_errors(result)),
            [
                "mqtt.ca_file: has no effect unless mqtt.tls = true",
                "mqtt.client_cert: has no effect unless mqtt.tls = true",
                "mqtt.client_cert: needs mqtt.client_key too",
                "mqtt.password_file: set mqtt.password or mqtt.password_file, not both",
                "mqtt.resend_initial_seconds: resend_initial_seconds (1000) is more than \
                 resend_max_seconds (900)",
            ]
        );
        let (_dir, result) = load_text("[mqtt]\npassword_file = \"p.txt\"\n", &required());
        assert_eq!(
            problems(&expect_errors(result)),
            ["mqtt.password_file: a password needs mqtt.username"]
        );
    }

    /// The password is never echoed in a message, nor in `Debug` output.
    #[test]
    fn password_is_never_shown() {
        let (_dir, result) = load_text("[mqtt]\npassword = 987654\n", &required());
        let shown = expect_errors(result).to_string();
        assert!(!shown.contains("987654"), "{shown}");
        assert!(
            shown.contains("mqtt.password: invalid value (hidden)"),
            "{shown}"
        );

        let (_dir, result) = load_text(
            "[mqtt]\nusername = \"u\"\npassword = \"hunter2\"\n",
            &required(),
        );
        let config = expect_config(result);
        assert!(!format!("{config:?}").contains("hunter2"));
        assert!(!config.summary().contains("hunter2"));
    }

    /// Scan sources are "bluez", "sim" or "replay:PATH"; service UUIDs must parse.
    #[test]
    fn scan_sources_and_uuids() {
        let load_scan = |scan: &str| load_text(&format!("[scan]\n{scan}\n"), &required());
        let (_d, r) = load_scan("source = \"replay:captures/a.btsnoop\"");
        assert_eq!(
            expect_config(r).scan.source,
            ScanSource::Replay("captures/a.btsnoop".into())
        );
        let (_d, r) = load_scan("source = \"sim\"\nadapter = \"hci1\"");
        let scan = expect_config(r).scan;
        assert_eq!(
            (scan.source, scan.adapter),
            (ScanSource::Sim, Some("hci1".into()))
        );
        let (_d, r) = load_scan("source = \"replay:\"");
        assert_eq!(
            problems(&expect_errors(r)),
            [
                "scan.source: invalid value \"replay:\": expected \"bluez\", \"sim\" or \"replay:PATH\""
            ]
        );
        let (_d, r) = load_scan("bluetrace_service_uuids = [\"B82AB3FC\", 7]");
        assert_eq!(
            problems(&expect_errors(r)),
            ["scan.bluetrace_service_uuids: invalid value 7: expected a list of strings"]
        );
        let (_d, r) = load_scan("bluetrace_service_uuids = [\"B82AB3FC\"]");
        assert_eq!(
            problems(&expect_errors(r)),
            [
                "scan.bluetrace_service_uuids: invalid value \"B82AB3FC\": expected service UUIDs \
                 like \"B82AB3FC-1595-4F6A-80F0-FE094CC218F9\""
            ]
        );
        let (_d, r) = load_scan("replay_speed = -1");
        assert_eq!(
            problems(&expect_errors(r)),
            ["scan.replay_speed: invalid value -1: expected a number >= 0 and <= 1000000"]
        );
        let (_d, r) = load_scan("replay_speed = 3");
        assert_eq!(expect_config(r).scan.replay_speed, 3.0);
    }

    /// Suggestions come only for near misses.
    #[test]
    fn suggestions_are_near_misses() {
        assert_eq!(edit_distance("prot", "port"), 1);
        assert_eq!(edit_distance("", "abc"), 3);
        assert_eq!(edit_distance("kitten", "sitting"), 3);
        assert_eq!(
            did_you_mean("hots", ["host", "port"].into_iter()),
            " (did you mean \"host\"?)"
        );
        assert_eq!(did_you_mean("zzzzzz", ["host", "port"].into_iter()), "");
        assert_eq!(did_you_mean("id", ["sim"].into_iter()), "");
        assert_eq!(
            did_you_mean("retension_dys", ["retention_days"].into_iter()),
            " (did you mean \"retention_days\"?)"
        );
    }
}
