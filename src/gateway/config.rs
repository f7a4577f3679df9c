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
//! The walking, the problem types and the `[mqtt]`/`[log]` checks are shared with the
//! authority's configuration in [`crate::config_schema`]; the gateway's keys and what they mean
//! are here.
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
use crate::config_schema::{
    self, KeySpec, Kind, LOG_FORMATS, LOG_LEVELS, Loader, Preset, Schema, int, spec,
};
use crate::gateway::outbox::{Backoff, OutboxOptions};
use base64::Engine;
use std::path::{Path, PathBuf};
use std::time::Duration;

pub use crate::config_schema::{
    CREDENTIALS_ENV, ClientAuth, ConfigErrors, ConfigProblem, LogFormat, LogLevel, LogSettings,
    MqttPassword, Secret, TlsSettings, process_env,
};

/// Where the gateway looks for its configuration unless told otherwise.
pub const DEFAULT_PATH: &str = "/etc/venuetrace/gateway.toml";

/// Prefix of the environment variables that override settings: `VENUETRACE_GATEWAY__` +
/// `SECTION__KEY`, upper case.
pub const ENV_PREFIX: &str = "VENUETRACE_GATEWAY__";

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
    /// `[bluetrace]`: reading BlueTrace (Wiqaytna) TempIDs over GATT.
    pub bluetrace: BluetraceSettings,
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
    /// Power the BlueZ adapter on when it is off (else a powered-off adapter is an error).
    pub power_on: bool,
    /// Most BlueZ devices tracked at once (bounds memory); more are counted and ignored
    /// until BlueZ removes older ones.
    pub max_devices: u32,
}

/// `[bluetrace]`: collecting BlueTrace (OpenTrace v2, Wiqaytna) TempIDs by connecting to the
/// phones and reading their GATT characteristic. Only the BlueZ source connects; a replay
/// ignores these settings, and the simulator reads `collect_tempids` to decide whether its
/// BlueTrace phones yield reads. `max_tempids_per_window` bounds the aggregator whatever the
/// source.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BluetraceSettings {
    /// Connect to BlueTrace phones and read their TempIDs (off: BlueTrace phones are only
    /// counted from their adverts).
    pub collect_tempids: bool,
    /// Organisation codes whose TempIDs are kept (`MAR` for Wiqaytna); reads of others are
    /// counted and dropped. Never empty.
    pub orgs: Vec<String>,
    /// Most phones connected at once (1..=4).
    pub max_connections: u32,
    /// Bound on one whole attempt: connect, resolve services, read.
    pub connect_timeout: Duration,
    /// A phone (by address) is not attempted again within this long, success or not.
    pub reread_after: Duration,
    /// Most attempts started in any 60 s, over all phones.
    pub max_reads_per_minute: u32,
    /// Cap on distinct TempIDs per window (memory bound); more are counted as dropped.
    pub max_tempids_per_window: u32,
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
    /// A JSON file holding a whole [`crate::sim::SimConfig`] (venues, population, shares),
    /// resolved against the configuration file's directory; when set it takes the place of
    /// `seed`, `phones` and `hours` (which must then be left unset).
    pub city: Option<PathBuf>,
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

/// Reads the configuration file at `path`, applies the `VENUETRACE_GATEWAY__*` overrides found
/// in `env` (the caller passes [`process_env`]; tests pass their own), and checks everything.
/// Returns the typed configuration, or every problem found.
pub fn load(path: &Path, env: &[(String, String)]) -> Result<GatewayConfig, ConfigErrors> {
    config_schema::load(path, env, &GATEWAY_SCHEMA, |loader| {
        build(loader, path, env)
    })
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
            ScanSource::Sim => match &self.sim.city {
                Some(city) => format!("simulation of the city in {}", city.display()),
                None => format!(
                    "simulation of {} phones over {} h (seed {})",
                    self.sim.phones, self.sim.hours, self.sim.seed
                ),
            },
        };
        lines.push(format!(
            "scan: {source}; {}-minute windows of at most {} RPIs",
            self.window.minutes, self.window.max_rpis
        ));
        let b = &self.bluetrace;
        if b.collect_tempids {
            lines.push(format!(
                "bluetrace: reading TempIDs of {} over GATT{}; at most {} connection(s) of {} s, \
                 {} attempts a minute, each phone every {} s; at most {} TempIDs a window",
                b.orgs.join(", "),
                match self.scan.source {
                    ScanSource::Bluez => "",
                    ScanSource::Replay(_) => " (no effect with a replay)",
                    ScanSource::Sim => " (simulated)",
                },
                b.max_connections,
                b.connect_timeout.as_secs(),
                b.max_reads_per_minute,
                b.reread_after.as_secs(),
                b.max_tempids_per_window
            ));
        }
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

/// The gateway's schema: sections, keys and the environment prefix.
static GATEWAY_SCHEMA: Schema = Schema {
    sections: SECTIONS,
    keys: SCHEMA,
    env_prefix: ENV_PREFIX,
};

/// The sections of the file, in documentation order.
const SECTIONS: &[&str] = &[
    "gateway",
    "authority",
    "scan",
    "bluetrace",
    "sim",
    "window",
    "outbox",
    "mqtt",
    "log",
];

/// What a valid `window.minutes` looks like.
const WINDOW_MINUTES: &str = "a multiple of 10 from 10 to 60 (whole ENIN intervals)";

/// `window.minutes`: whole 10-minute ENIN intervals, 10 to 60 minutes.
fn window_minutes(minutes: i64) -> Result<(), String> {
    if minutes % 10 != 0 {
        Err(format!(
            "{minutes} does not divide into whole 10-minute ENIN intervals"
        ))
    } else if !(10..=60).contains(&minutes) {
        Err(format!(
            "invalid value {minutes}: expected {WINDOW_MINUTES}"
        ))
    } else {
        Ok(())
    }
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
    spec("scan", "power_on", Kind::Bool, Preset::Bool(true)),
    spec(
        "scan",
        "max_devices",
        int(16, 1_000_000),
        Preset::Int(20_000),
    ),
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
    spec(
        "bluetrace",
        "collect_tempids",
        Kind::Bool,
        Preset::Bool(false),
    ),
    spec(
        "bluetrace",
        "orgs",
        Kind::StrList,
        Preset::StrList(&["MAR"]),
    ),
    spec("bluetrace", "max_connections", int(1, 4), Preset::Int(1)),
    spec("bluetrace", "connect_timeout_s", int(1, 30), Preset::Int(6)),
    spec(
        "bluetrace",
        "reread_after_s",
        int(10, 3600),
        Preset::Int(100),
    ),
    spec(
        "bluetrace",
        "max_reads_per_minute",
        int(1, 600),
        Preset::Int(20),
    ),
    spec(
        "bluetrace",
        "max_tempids_per_window",
        int(1, 1_000_000),
        Preset::Int(10_000),
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
    spec("sim", "city", Kind::Str, Preset::Str("")),
    spec(
        "window",
        "minutes",
        Kind::IntRule {
            expected: WINDOW_MINUTES,
            rule: window_minutes,
        },
        Preset::Int(10),
    ),
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
    spec("log", "level", Kind::OneOf(LOG_LEVELS), Preset::Str("info")),
    spec(
        "log",
        "format",
        Kind::OneOf(LOG_FORMATS),
        Preset::Str("text"),
    ),
];

/// Builds the typed configuration, reporting every semantic problem. `None` if any value
/// was missing or invalid (each already reported).
fn build(l: &mut Loader, path: &Path, env: &[(String, String)]) -> Option<GatewayConfig> {
    let config_dir = path.parent().unwrap_or(Path::new(""));
    let id = l.identifier("gateway", "id");
    let venue = l.identifier("gateway", "venue");
    let state_dir = l.non_empty("gateway", "state_dir").map(PathBuf::from);
    let private_key = l.private_key(
        "gateway",
        "private_key",
        state_dir.as_deref(),
        env,
        "gateway.key",
    );
    let rssi_calibration_db = l
        .int("gateway", "rssi_calibration_db")
        .and_then(|v| i8::try_from(v).ok());
    let public_key = public_key(l, config_dir);

    let source = scan_source(l);
    let adapter = l.optional("scan", "adapter");
    let uuids = service_uuids(l);
    let replay_speed = l.float("scan", "replay_speed");
    let power_on = l.boolean("scan", "power_on");
    let max_devices = l
        .int("scan", "max_devices")
        .and_then(|v| u32::try_from(v).ok());

    let bluetrace = bluetrace(l);
    if let (Some(b), Some(uuids)) = (&bluetrace, &uuids)
        && b.collect_tempids
        && uuids.is_empty()
    {
        l.problem_at(
            "bluetrace",
            "collect_tempids",
            "needs scan.bluetrace_service_uuids: the TempID characteristic is looked for \
             under those services"
                .into(),
        );
    }

    let seed = l.int("sim", "seed").and_then(|v| u64::try_from(v).ok());
    let phones = l.int("sim", "phones").and_then(|v| u32::try_from(v).ok());
    let hours = l.float("sim", "hours");
    let speed = l.float("sim", "speed");
    let ground_truth = l
        .optional("sim", "ground_truth")
        .map(|p| p.map(PathBuf::from));
    let city = sim_city(l, config_dir);

    let minutes = l
        .int("window", "minutes")
        .and_then(|v| u32::try_from(v).ok());
    let max_rpis = l
        .int("window", "max_rpis")
        .and_then(|v| u32::try_from(v).ok());

    let outbox_path = match (&state_dir, l.non_empty("outbox", "path")) {
        (Some(state_dir), Some(path)) => Some(state_dir.join(path)),
        _ => None,
    };
    let retention = l
        .int("outbox", "retention_days")
        .and_then(|d| u64::try_from(d).ok())
        .map(|d| Duration::from_secs(d * 86_400));
    let max_bytes = l
        .int("outbox", "max_megabytes")
        .and_then(|m| u64::try_from(m).ok())
        .map(|m| m << 20);

    let mqtt = mqtt(l, config_dir, id.as_deref());

    let log = l.log();

    Some(GatewayConfig {
        file: path.to_owned(),
        overrides: l.overrides().to_vec(),
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
            power_on: power_on?,
            max_devices: max_devices?,
        },
        bluetrace: bluetrace?,
        sim: SimSettings {
            seed: seed?,
            phones: phones?,
            hours: hours?,
            speed: speed?,
            ground_truth: ground_truth?,
            city: city?,
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
        log: log?,
    })
}

/// `authority.public_key`: base64 of 32 bytes, or a file (relative to the configuration
/// file's directory) holding that.
fn public_key(l: &mut Loader, config_dir: &Path) -> Option<[u8; 32]> {
    let value = l.string("authority", "public_key")?;
    let b64 = base64::engine::general_purpose::STANDARD;
    if let Ok(Ok(key)) = b64.decode(value.trim()).map(<[u8; 32]>::try_from) {
        return Some(key);
    }
    if value.trim().is_empty() {
        l.problem_at("authority", "public_key", "must not be empty".into());
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
    l.problem_at("authority", "public_key", message);
    None
}

/// `sim.city`: a city file (relative to the configuration's directory) that replaces
/// `sim.seed`, `sim.phones` and `sim.hours`, so setting any of them as well is a contradiction.
fn sim_city(l: &mut Loader, config_dir: &Path) -> Option<Option<PathBuf>> {
    let city = l.optional_path("sim", "city", config_dir)?;
    if city.is_some() {
        for key in ["seed", "phones", "hours"] {
            if l.is_set("sim", key) {
                l.problem_at(
                    "sim",
                    key,
                    "has no effect when sim.city is set (the city file holds the whole \
                     simulation): remove one of the two"
                        .into(),
                );
            }
        }
    }
    Some(city)
}

fn scan_source(l: &mut Loader) -> Option<ScanSource> {
    let value = l.string("scan", "source")?;
    match value.as_str() {
        "bluez" => Some(ScanSource::Bluez),
        "sim" => Some(ScanSource::Sim),
        other => match other.strip_prefix("replay:") {
            Some(path) if !path.is_empty() => Some(ScanSource::Replay(PathBuf::from(path))),
            _ => {
                l.problem_at(
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

fn service_uuids(l: &mut Loader) -> Option<Vec<ServiceUuid>> {
    let items = l.list("scan", "bluetrace_service_uuids")?;
    let mut uuids = Vec::with_capacity(items.len());
    let mut bad = Vec::new();
    for item in &items {
        match ServiceUuid::parse(item) {
            Some(uuid) => uuids.push(uuid),
            None => bad.push(format!("{item:?}")),
        }
    }
    if !bad.is_empty() {
        l.problem_at(
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

/// `[bluetrace]`: the GATT read settings; every organisation code must look like one.
fn bluetrace(l: &mut Loader) -> Option<BluetraceSettings> {
    let collect_tempids = l.boolean("bluetrace", "collect_tempids");
    let orgs = l.list("bluetrace", "orgs");
    let orgs = match orgs {
        Some(orgs) if orgs.is_empty() => {
            l.problem_at(
                "bluetrace",
                "orgs",
                "must name at least one organisation code (Wiqaytna's is \"MAR\")".into(),
            );
            None
        }
        Some(orgs) => {
            let mut ok = true;
            for (i, org) in orgs.iter().enumerate() {
                if !crate::bluetrace::valid_org(org) {
                    l.problem_at_item(
                        "bluetrace",
                        "orgs",
                        i,
                        format!(
                            "invalid value {org:?}: expected an organisation code of 1-16 \
                             characters of A-Z a-z 0-9 _ (e.g. \"MAR\")"
                        ),
                    );
                    ok = false;
                }
            }
            ok.then_some(orgs)
        }
        None => None,
    };
    let u32_of = |l: &Loader, key| l.int("bluetrace", key).and_then(|v| u32::try_from(v).ok());
    let secs = |l: &Loader, key| {
        l.int("bluetrace", key)
            .and_then(|v| u64::try_from(v).ok())
            .map(Duration::from_secs)
    };
    Some(BluetraceSettings {
        collect_tempids: collect_tempids?,
        orgs: orgs?,
        max_connections: u32_of(l, "max_connections")?,
        connect_timeout: secs(l, "connect_timeout_s")?,
        reread_after: secs(l, "reread_after_s")?,
        max_reads_per_minute: u32_of(l, "max_reads_per_minute")?,
        max_tempids_per_window: u32_of(l, "max_tempids_per_window")?,
    })
}

/// `[mqtt]`: the connection keys shared with the authority, the client id defaulting from
/// the gateway id, and the resend schedule.
fn mqtt(l: &mut Loader, config_dir: &Path, gateway_id: Option<&str>) -> Option<MqttSettings> {
    let connection = l.mqtt_connection(
        config_dir,
        gateway_id.map(|id| format!("venuetrace-gw-{id}")),
    );
    let initial = l
        .int("mqtt", "resend_initial_seconds")
        .and_then(|s| u64::try_from(s).ok());
    let max = l
        .int("mqtt", "resend_max_seconds")
        .and_then(|s| u64::try_from(s).ok());
    if let (Some(initial), Some(max)) = (initial, max)
        && initial > max
    {
        let key = if l.is_set("mqtt", "resend_initial_seconds") {
            "resend_initial_seconds"
        } else {
            "resend_max_seconds"
        };
        l.problem_at(
            "mqtt",
            key,
            format!("resend_initial_seconds ({initial}) is more than resend_max_seconds ({max})"),
        );
        return None;
    }
    let c = connection?;
    Some(MqttSettings {
        host: c.host,
        port: c.port,
        client_id: c.client_id,
        tls: c.tls,
        username: c.username,
        password: c.password,
        keep_alive: c.keep_alive,
        resend: Backoff {
            initial: Duration::from_secs(initial?),
            max: Duration::from_secs(max?),
        },
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeSet;

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
                power_on: true,
                max_devices: 20_000,
            }
        );
        assert_eq!(
            config.bluetrace,
            BluetraceSettings {
                collect_tempids: false,
                orgs: vec!["MAR".into()],
                max_connections: 1,
                connect_timeout: Duration::from_secs(6),
                reread_after: Duration::from_secs(100),
                max_reads_per_minute: 20,
                max_tempids_per_window: 10_000,
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
                city: None,
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

    /// `sim.city` names a city file relative to the configuration's directory and replaces
    /// `sim.seed`, `sim.phones` and `sim.hours`: setting one of those as well is reported.
    #[test]
    fn sim_city_replaces_seed_phones_and_hours() {
        let (dir, result) = load_text("[sim]\ncity = \"city.json\"\nspeed = 0.0\n", &required());
        let config = expect_config(result);
        assert_eq!(config.sim.city, Some(dir.path().join("city.json")));
        let (_dir, result) = load_text(
            "[sim]\ncity = \"/srv/city.json\"\nseed = 3\nhours = 2.0\n",
            &required(),
        );
        let message = "has no effect when sim.city is set (the city file holds the whole \
                       simulation): remove one of the two";
        assert_eq!(
            problems(&expect_errors(result)),
            [
                format!("sim.seed: {message}"),
                format!("sim.hours: {message}")
            ]
        );
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

    /// `[bluetrace]`: off by default; every key checked against its range, every organisation
    /// code checked (naming the bad item), an empty list refused, collection without a
    /// BlueTrace service UUID refused; environment overrides work, lists comma-separated.
    #[test]
    fn bluetrace_keys() {
        let (_d, r) = load_text(
            "[bluetrace]\ncollect_tempids = true\norgs = [\"MAR\", \"SG_MOH\"]\n\
             max_connections = 4\nconnect_timeout_s = 30\nreread_after_s = 10\n\
             max_reads_per_minute = 600\nmax_tempids_per_window = 1000000\n",
            &required(),
        );
        let config = expect_config(r);
        assert_eq!(
            config.bluetrace,
            BluetraceSettings {
                collect_tempids: true,
                orgs: vec!["MAR".into(), "SG_MOH".into()],
                max_connections: 4,
                connect_timeout: Duration::from_secs(30),
                reread_after: Duration::from_secs(10),
                max_reads_per_minute: 600,
                max_tempids_per_window: 1_000_000,
            }
        );
        assert!(
            config
                .summary()
                .contains("bluetrace: reading TempIDs of MAR, SG_MOH over GATT;"),
            "{}",
            config.summary()
        );

        let (_d, r) = load_text(
            "[bluetrace]\ncollect_tempids = \"yes\"\norgs = [\"MAR\", \"M A R\", \"\"]\n\
             max_connections = 5\nconnect_timeout_s = 0\nreread_after_s = 9\n\
             max_reads_per_minute = 601\nmax_tempids_per_window = 0\nmax_connection = 1\n",
            &required(),
        );
        assert_eq!(
            problems(&expect_errors(r)),
            [
                "bluetrace.collect_tempids: invalid value \"yes\": expected true or false",
                "bluetrace.connect_timeout_s: invalid value 0: expected an integer 1..=30",
                "bluetrace.max_connection: unknown key (did you mean \"max_connections\"?)",
                "bluetrace.max_connections: invalid value 5: expected an integer 1..=4",
                "bluetrace.max_reads_per_minute: invalid value 601: expected an integer 1..=600",
                "bluetrace.max_tempids_per_window: invalid value 0: expected an integer \
                 1..=1000000",
                "bluetrace.reread_after_s: invalid value 9: expected an integer 10..=3600",
                "bluetrace.orgs[1]: invalid value \"M A R\": expected an organisation code of \
                 1-16 characters of A-Z a-z 0-9 _ (e.g. \"MAR\")",
                "bluetrace.orgs[2]: invalid value \"\": expected an organisation code of 1-16 \
                 characters of A-Z a-z 0-9 _ (e.g. \"MAR\")",
            ]
        );

        let (_d, r) = load_text("[bluetrace]\norgs = []\n", &required());
        assert_eq!(
            problems(&expect_errors(r)),
            ["bluetrace.orgs: must name at least one organisation code (Wiqaytna's is \"MAR\")"]
        );
        let (_d, r) = load_text(
            "[scan]\nbluetrace_service_uuids = []\n[bluetrace]\ncollect_tempids = true\n",
            &required(),
        );
        assert_eq!(
            problems(&expect_errors(r)),
            [
                "bluetrace.collect_tempids: needs scan.bluetrace_service_uuids: the TempID \
                 characteristic is looked for under those services"
            ]
        );

        let (_d, r) = load_text(
            "",
            &with_required(&[
                ("VENUETRACE_GATEWAY__BLUETRACE__COLLECT_TEMPIDS", "true"),
                ("VENUETRACE_GATEWAY__BLUETRACE__ORGS", "MAR, TN"),
                ("VENUETRACE_GATEWAY__BLUETRACE__REREAD_AFTER_S", "300"),
            ]),
        );
        let config = expect_config(r);
        assert!(config.bluetrace.collect_tempids);
        assert_eq!(config.bluetrace.orgs, ["MAR", "TN"]);
        assert_eq!(config.bluetrace.reread_after, Duration::from_secs(300));
        let (_d, r) = load_text(
            "",
            &with_required(&[("VENUETRACE_GATEWAY__BLUETRACE__MAX_CONNECTIONS", "9")]),
        );
        let errors = expect_errors(r);
        assert_eq!(
            errors.problems[0].source,
            "VENUETRACE_GATEWAY__BLUETRACE__MAX_CONNECTIONS"
        );
    }
}
