//! The daemon as a service: `venuetrace-gateway run` and `keygen` — from the configuration
//! file to a running [`daemon`](super::daemon): logging, keys, the broker settings, the source,
//! signals, and the exit code.
//!
//! Everything that needs a decision lives in the daemon and the pure modules; this file only
//! resolves settings and wires the process to them.

use super::config::{self, GatewayConfig, ScanSource};
use super::daemon::{self, DaemonSettings, RunReport, SourceSpec};
use super::publisher::MqttSettings;
use super::replay::{Pacing, ReplayOptions};
use super::sim::SimOptions;
use crate::aggregate::AggregatorConfig;
use crate::batch::GatewayId;
use crate::exit::Exit;
use crate::seal::{KeyFileError, KeyPair, PublicKey};
use crate::sim::SimConfig;
use std::path::{Path, PathBuf};
use std::time::Duration;
use tokio_util::sync::CancellationToken;

/// `run` or `keygen` failed.
#[derive(Debug, thiserror::Error)]
pub enum ServiceError {
    /// The configuration is invalid (all problems listed).
    #[error("invalid configuration:\n{0}")]
    Config(config::ConfigErrors),
    /// A key file cannot be used.
    #[error(transparent)]
    Key(#[from] KeyFileError),
    /// A file the configuration names cannot be read.
    #[error(transparent)]
    File(#[from] crate::gateway::publisher::SettingsFileError),
    /// The source asked for is not available in this build.
    #[error("{0}")]
    Unavailable(String),
    /// The daemon stopped on an error.
    #[error(transparent)]
    Daemon(#[from] daemon::DaemonError),
    /// The async runtime could not start.
    #[error("cannot start the async runtime")]
    Runtime(#[source] std::io::Error),
}

impl ServiceError {
    /// The sysexits code.
    pub fn exit(&self) -> Exit {
        match self {
            ServiceError::Config(_) => Exit::Config,
            ServiceError::Key(KeyFileError::Exists(_)) => Exit::CantCreat,
            ServiceError::Key(KeyFileError::Write { .. }) => Exit::CantCreat,
            ServiceError::Key(_) => Exit::Config,
            ServiceError::File(_) => Exit::NoInput,
            ServiceError::Unavailable(_) => Exit::Unavailable,
            ServiceError::Daemon(daemon::DaemonError::Outbox(e)) => e.exit(),
            ServiceError::Daemon(daemon::DaemonError::Source(_)) => Exit::DataErr,
            ServiceError::Daemon(_) => Exit::Software,
            ServiceError::Runtime(_) => Exit::Software,
        }
    }
}

/// Loads the configuration with this process's environment.
pub fn load_config(path: &Path) -> Result<GatewayConfig, ServiceError> {
    config::load(path, &config::process_env()).map_err(ServiceError::Config)
}

/// Start of the simulated day for `scan.source = "sim"`: yesterday 06:00 UTC. Every gateway
/// of one simulated city started the same day gets the same start (so they simulate the same
/// phones), and the whole day lies in the past, inside every retention period.
pub fn sim_start(now_unix_s: u64) -> u64 {
    let today = now_unix_s - now_unix_s % 86_400;
    today - 86_400 + 6 * 3_600
}

/// Resolves the daemon's settings from the configuration (reads the key and TLS files).
pub fn settings(
    config: &GatewayConfig,
    source: Option<&ScanSource>,
    exit_when_delivered: bool,
) -> Result<DaemonSettings, ServiceError> {
    let keys = KeyPair::load(&config.gateway.private_key)?;
    let m = &config.mqtt;
    let tls = crate::gateway::publisher::load_tls(m.tls.as_ref()).map_err(ServiceError::from)?;
    let credentials =
        crate::gateway::publisher::load_credentials(m.username.as_ref(), m.password.as_ref())
            .map_err(ServiceError::from)?;
    let source = match source.unwrap_or(&config.scan.source) {
        ScanSource::Bluez => {
            return Err(ServiceError::Unavailable(
                "scan.source = \"bluez\": the BlueZ source is not part of this build yet; \
                 use --source replay:PATH or --source sim"
                    .into(),
            ));
        }
        ScanSource::Replay(path) => SourceSpec::Replay(ReplayOptions {
            path: path.clone(),
            pacing: if config.scan.replay_speed > 0.0 {
                Pacing::RealTime {
                    speed: config.scan.replay_speed,
                }
            } else {
                Pacing::AsFastAsPossible
            },
            rebase_time_to_now: false,
        }),
        ScanSource::Sim => {
            let now = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_secs());
            let s = &config.sim;
            SourceSpec::Sim(SimOptions {
                config: SimConfig {
                    seed: s.seed,
                    phones: s.phones as usize,
                    hours: s.hours,
                    start_unix_s: sim_start(now),
                    bluetrace_service_uuid: config
                        .scan
                        .bluetrace_service_uuids
                        .first()
                        .map_or_else(
                            || SimConfig::default().bluetrace_service_uuid,
                            |u| u.to_string(),
                        ),
                    ..SimConfig::default()
                },
                venue: config.gateway.venue.clone(),
                speed: s.speed,
                ground_truth: s.ground_truth.clone(),
            })
        }
    };
    Ok(DaemonSettings {
        gateway_id: GatewayId::new(&config.gateway.id).map_err(|e| {
            ServiceError::Unavailable(format!("gateway.id: {e}")) // validated by config already
        })?,
        venue: config.gateway.venue.clone(),
        rssi_calibration_db: i32::from(config.gateway.rssi_calibration_db),
        keys,
        authority: PublicKey::from_bytes(config.authority.public_key),
        aggregator: AggregatorConfig {
            window_intervals: config.window.intervals(),
            max_rpis: config.window.max_rpis as usize,
            bluetrace_uuids: config.scan.bluetrace_service_uuids.clone(),
        },
        outbox_path: config.outbox.path.clone(),
        outbox_options: config.outbox.options(),
        backoff: m.resend,
        mqtt: MqttSettings {
            host: m.host.clone(),
            port: m.port,
            client_id: m.client_id.clone(),
            tls,
            credentials,
            keep_alive: m.keep_alive,
            max_packet_bytes: crate::seal::MAX_ENVELOPE_BYTES + 1024,
        },
        source,
        exit_when_delivered,
        flush_deadline: Duration::from_secs(10),
    })
}

/// `venuetrace-gateway run`: runs the daemon until SIGTERM/SIGINT (or, with
/// `exit_when_delivered`, until a finite source has ended and everything is receipted).
pub fn run(
    config_path: &Path,
    source: Option<ScanSource>,
    exit_when_delivered: bool,
) -> Result<RunReport, ServiceError> {
    let config = load_config(config_path)?;
    crate::process::init_logging(config.log.level.as_str(), config.log.format);
    let settings = settings(&config, source.as_ref(), exit_when_delivered)?;
    // Two worker threads: a Pi has four cores, and the work is one loop plus blocking SQLite.
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .map_err(ServiceError::Runtime)?;
    runtime.block_on(async move {
        let shutdown = CancellationToken::new();
        let signals = tokio::spawn(crate::process::watch_signals(shutdown.clone()));
        let report = daemon::run(settings, shutdown, None).await;
        signals.abort();
        Ok(report?)
    })
}

/// `venuetrace-gateway keygen`: writes a new key pair's private key to `path` (mode 0600,
/// never overwriting) and returns it, so the caller can print the public key for enrollment.
pub fn keygen(path: &Path) -> Result<KeyPair, ServiceError> {
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty())
        && !dir.is_dir()
    {
        return Err(ServiceError::Key(KeyFileError::Write {
            path: path.display().to_string(),
            source: std::io::Error::new(
                std::io::ErrorKind::NotFound,
                "its directory does not exist",
            ),
        }));
    }
    let keys = KeyPair::generate();
    keys.save(path)?;
    Ok(keys)
}

/// The key file a command should use: `--key`, else the configuration's (if a configuration
/// file is given or exists at the default path), else the packaged default location.
pub fn key_path(explicit: Option<PathBuf>, config_path: &Path) -> Result<PathBuf, ServiceError> {
    if let Some(path) = explicit {
        return Ok(path);
    }
    if config_path.exists() {
        return Ok(load_config(config_path)?.gateway.private_key);
    }
    Ok(PathBuf::from("/var/lib/venuetrace-gateway/gateway.key"))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The simulated day starts yesterday at 06:00 UTC, the same for any time of today.
    #[test]
    fn sim_day_is_yesterday() {
        let day = 20_000 * 86_400u64;
        assert_eq!(sim_start(day), day - 86_400 + 21_600);
        assert_eq!(sim_start(day + 86_399), day - 86_400 + 21_600);
    }
}
