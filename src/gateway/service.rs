//! The daemon as a service: `venuetrace-gateway run` and `keygen` — from the configuration
//! file to a running [`daemon`](super::daemon): logging, keys, the broker settings, the source,
//! signals, and the exit code.
//!
//! Everything that needs a decision lives in the daemon and the pure modules; this file only
//! resolves settings and wires the process to them.

use super::bluez::BluezOptions;
use super::config::{self, GatewayConfig, ScanSource};
use super::daemon::{self, Control, DaemonSettings, Reloadable, RunReport, SourceSpec};
use super::gatt::GattOptions;
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
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tracing::{error, info, warn};

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
            ServiceError::Daemon(daemon::DaemonError::Scanner(_)) => Exit::Unavailable,
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

/// The simulated city of `scan.source = "sim"`: the `sim.city` file when set (a missing
/// `start_unix_s` or `bluetrace_service_uuid` filled in as below), else the default city
/// with `sim.seed`, `sim.phones` and `sim.hours`. The day starts at [`sim_start`]; BlueTrace
/// phones advertise the first of `scan.bluetrace_service_uuids`; with
/// `bluetrace.collect_tempids` the gateway's GATT reads of their TempIDs are simulated too
/// (re-read after `bluetrace.reread_after_s`, organisation the first of `bluetrace.orgs`). An
/// unreadable or invalid city file is a configuration error naming `sim.city` and the file.
pub fn sim_config(config: &GatewayConfig, now_unix_s: u64) -> Result<SimConfig, ServiceError> {
    let uuid = config.scan.bluetrace_service_uuids.first().map_or_else(
        || SimConfig::default().bluetrace_service_uuid,
        |u| u.to_string(),
    );
    let s = &config.sim;
    let bt = &config.bluetrace;
    let org = bt
        .orgs
        .first()
        .cloned()
        .unwrap_or_else(|| SimConfig::default().bluetrace_org);
    let reread_s = u32::try_from(bt.reread_after.as_secs()).unwrap_or(u32::MAX);
    let Some(path) = &s.city else {
        return Ok(SimConfig {
            seed: s.seed,
            phones: s.phones as usize,
            hours: s.hours,
            start_unix_s: sim_start(now_unix_s),
            bluetrace_service_uuid: uuid,
            bluetrace_reads: bt.collect_tempids,
            bluetrace_reread_s: reread_s,
            bluetrace_org: org,
            ..SimConfig::default()
        });
    };
    let problem = |message: String| {
        ServiceError::Config(config::ConfigErrors {
            problems: vec![config::ConfigProblem {
                source: config.file.display().to_string(),
                key: "sim.city".into(),
                message,
            }],
        })
    };
    let text =
        std::fs::read(path).map_err(|e| problem(format!("cannot read {}: {e}", path.display())))?;
    let mut value: serde_json::Value = serde_json::from_slice(&text)
        .map_err(|e| problem(format!("{} is not JSON: {e}", path.display())))?;
    if let Some(fields) = value.as_object_mut() {
        fields
            .entry("start_unix_s")
            .or_insert_with(|| sim_start(now_unix_s).into());
        fields
            .entry("bluetrace_service_uuid")
            .or_insert_with(|| uuid.into());
        fields
            .entry("bluetrace_reads")
            .or_insert_with(|| bt.collect_tempids.into());
        fields
            .entry("bluetrace_reread_s")
            .or_insert_with(|| reread_s.into());
        fields.entry("bluetrace_org").or_insert_with(|| org.into());
    }
    serde_json::from_value(value).map_err(|e| {
        problem(format!(
            "{} is not a simulation config: {e}",
            path.display()
        ))
    })
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
        ScanSource::Bluez => SourceSpec::Bluez(BluezOptions {
            adapter: config.scan.adapter.clone(),
            power_on: config.scan.power_on,
            max_devices: config.scan.max_devices as usize,
            bluetrace_uuids: config.scan.bluetrace_service_uuids.clone(),
            retry: Duration::from_secs(2),
            gatt: gatt_options(&config.bluetrace),
        }),
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
                config: sim_config(config, now)?,
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
            max_tempids: config.bluetrace.max_tempids_per_window as usize,
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
        flush_deadline: FLUSH_DEADLINE,
        dbus_status: true,
    })
}

/// The BlueZ source's TempID reader settings: `None` unless `bluetrace.collect_tempids`.
pub fn gatt_options(b: &config::BluetraceSettings) -> Option<GattOptions> {
    b.collect_tempids.then(|| GattOptions {
        orgs: b.orgs.clone(),
        max_connections: b.max_connections as usize,
        attempt_timeout: b.connect_timeout,
        reread_after: b.reread_after,
        max_reads_per_minute: b.max_reads_per_minute as usize,
    })
}

/// How long shutdown waits for receipts of the last batches.
const FLUSH_DEADLINE: Duration = Duration::from_secs(10);

/// The run-time part of a configuration.
fn reloadable(config: &GatewayConfig) -> Reloadable {
    Reloadable {
        backoff: config.mqtt.resend,
        outbox_options: config.outbox.options(),
        flush_deadline: FLUSH_DEADLINE,
    }
}

/// The settings that changed between two configurations but only apply after a restart.
pub fn needs_restart(old: &GatewayConfig, new: &GatewayConfig) -> Vec<&'static str> {
    let mut changed = Vec::new();
    let mut check = |differs: bool, what: &'static str| {
        if differs {
            changed.push(what);
        }
    };
    check(old.gateway != new.gateway, "[gateway]");
    check(old.authority != new.authority, "[authority]");
    check(old.scan != new.scan, "[scan]");
    check(old.bluetrace != new.bluetrace, "[bluetrace]");
    check(old.sim != new.sim, "[sim]");
    check(old.window != new.window, "[window]");
    check(old.outbox.path != new.outbox.path, "outbox.path");
    let mut mqtt = new.mqtt.clone();
    mqtt.resend = old.mqtt.resend;
    check(old.mqtt != mqtt, "[mqtt] (but resend_*)");
    check(old.log.format != new.log.format, "log.format");
    changed
}

/// Handles SIGHUP: re-reads the configuration; an invalid one is reported in full and
/// changes nothing; a valid one applies its run-time settings (log level, resend schedule,
/// outbox retention and quota) and names those that need a restart.
async fn reload_loop(
    path: PathBuf,
    mut current: GatewayConfig,
    logging: crate::process::Logging,
    mut hup: mpsc::UnboundedReceiver<()>,
    control: mpsc::UnboundedSender<Control>,
) {
    while hup.recv().await.is_some() {
        let loaded = {
            let path = path.clone();
            tokio::task::spawn_blocking(move || load_config(&path)).await
        };
        let new = match loaded {
            Ok(Ok(new)) => new,
            Ok(Err(e)) => {
                error!(
                    file = %path.display(),
                    problems = %crate::exit::describe(&e),
                    "configuration reload refused: the file is invalid; still running with the previous configuration"
                );
                let _ = control.send(Control::ReloadFailed);
                continue;
            }
            Err(e) => {
                error!(error = %e, "configuration reload failed");
                let _ = control.send(Control::ReloadFailed);
                continue;
            }
        };
        if new.log.level != current.log.level {
            if logging.set_level(new.log.level.as_str()) {
                info!(level = new.log.level.as_str(), "log level changed");
            } else {
                warn!("log.level not changed: RUST_LOG overrides it");
            }
        }
        let restart = needs_restart(&current, &new);
        if !restart.is_empty() {
            warn!(
                changed = %restart.join(", "),
                "changed settings that apply only after a restart (systemctl restart venuetrace-gateway)"
            );
        }
        let _ = control.send(Control::Reload(reloadable(&new)));
        current = new;
    }
}

/// `venuetrace-gateway run`: runs the daemon until SIGTERM/SIGINT (or, with
/// `exit_when_delivered`, until a finite source has ended and everything is receipted).
pub fn run(
    config_path: &Path,
    source: Option<ScanSource>,
    exit_when_delivered: bool,
) -> Result<RunReport, ServiceError> {
    let config = load_config(config_path)?;
    let logging = crate::process::init_logging(config.log.level.as_str(), config.log.format);
    let settings = settings(&config, source.as_ref(), exit_when_delivered)?;
    // Two worker threads: a Pi has four cores, and the work is one loop plus blocking SQLite.
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .map_err(ServiceError::Runtime)?;
    runtime.block_on(async move {
        let shutdown = CancellationToken::new();
        let (hup_tx, hup_rx) = mpsc::unbounded_channel();
        let (control_tx, control_rx) = mpsc::unbounded_channel();
        let signals = tokio::spawn(crate::process::watch_signals(
            shutdown.clone(),
            Some(hup_tx),
        ));
        let reloads = tokio::spawn(reload_loop(
            config_path.to_owned(),
            config,
            logging,
            hup_rx,
            control_tx,
        ));
        let report = daemon::run_with(settings, shutdown, None, Some(control_rx)).await;
        signals.abort();
        reloads.abort();
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

    /// A `sim.city` file is the simulation: its venues, seed and shares are used, a missing
    /// start is yesterday 06:00 UTC, and an unreadable or invalid file is a configuration
    /// error naming `sim.city`, the file and what is wrong.
    #[test]
    fn sim_city_file_is_the_simulation() {
        let dir = tempfile::tempdir().expect("tempdir");
        let file = dir.path().join("gateway.toml");
        std::fs::write(
            &file,
            "[gateway]\nid = \"gw-1\"\nvenue = \"hammam-1\"\n[authority]\n\
             public_key = \"AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=\"\n\
             [sim]\ncity = \"city.json\"\n",
        )
        .expect("gateway.toml");
        let city = dir.path().join("city.json");
        std::fs::write(
            &city,
            r#"{"seed": 7, "infected_share": 0.5, "venues": [{"id": "hammam-1",
                "kind": "hammam", "arrivals_per_hour": 20, "mean_dwell_minutes": 60}]}"#,
        )
        .expect("city.json");
        let config = config::load(&file, &[]).expect("configuration");
        let now = 20_000 * 86_400 + 3_600;
        let sim = sim_config(&config, now).expect("city");
        assert_eq!(
            (sim.seed, sim.infected_share, sim.venues[0].id.as_str()),
            (7, 0.5, "hammam-1")
        );
        assert_eq!(sim.start_unix_s, sim_start(now));
        assert_eq!(sim.phones, SimConfig::default().phones);
        assert!(!sim.bluetrace_reads, "no TempID reads unless collected");

        // bluetrace.collect_tempids simulates the gateway's reads, with its re-read period
        // and organisation, unless the city file says otherwise.
        let text = std::fs::read_to_string(&file).expect("read");
        std::fs::write(
            &file,
            format!(
                "{text}[bluetrace]\ncollect_tempids = true\nreread_after_s = 120\norgs = [\"TST\"]\n"
            ),
        )
        .expect("gateway.toml");
        let config = config::load(&file, &[]).expect("configuration");
        let sim = sim_config(&config, now).expect("city");
        assert!(sim.bluetrace_reads);
        assert_eq!(
            (sim.bluetrace_reread_s, sim.bluetrace_org.as_str()),
            (120, "TST")
        );
        std::fs::write(&city, r#"{"seed": 7, "bluetrace_reads": false}"#).expect("city.json");
        assert!(!sim_config(&config, now).expect("city").bluetrace_reads);
        std::fs::write(&city, r#"{"sead": 7}"#).expect("city.json");
        let err = sim_config(&config, now)
            .expect_err("unknown field")
            .to_string();
        assert!(
            err.contains("sim.city: ")
                && err.contains("city.json is not a simulation config")
                && err.contains("sead"),
            "{err}"
        );
        std::fs::remove_file(&city).expect("remove");
        let err = sim_config(&config, now).expect_err("missing").to_string();
        assert!(err.contains("sim.city: cannot read "), "{err}");
    }

    /// The BlueZ source connects to phones only with `bluetrace.collect_tempids`, and then
    /// with the configured limits; the aggregator's TempID cap comes from the configuration
    /// whatever the source.
    #[test]
    fn gatt_options_follow_the_configuration() {
        let dir = tempfile::tempdir().expect("tempdir");
        let file = dir.path().join("gateway.toml");
        let base = format!(
            "[gateway]\nid = \"gw-1\"\nvenue = \"v\"\nstate_dir = {:?}\n[authority]\n\
             public_key = \"AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=\"\n",
            dir.path().display().to_string()
        );
        KeyPair::generate()
            .save(&dir.path().join("gateway.key"))
            .expect("key");
        std::fs::write(&file, &base).expect("config");
        let config = config::load(&file, &[]).expect("configuration");
        assert_eq!(gatt_options(&config.bluetrace), None);
        let SourceSpec::Bluez(bluez) = settings(&config, None, false).expect("settings").source
        else {
            panic!("the BlueZ source by default");
        };
        assert_eq!(bluez.gatt, None);
        std::fs::write(
            &file,
            format!(
                "{base}[bluetrace]\ncollect_tempids = true\norgs = [\"MAR\", \"TN\"]\n\
                 max_connections = 2\nconnect_timeout_s = 8\nreread_after_s = 300\n\
                 max_reads_per_minute = 30\nmax_tempids_per_window = 77\n"
            ),
        )
        .expect("config");
        let config = config::load(&file, &[]).expect("configuration");
        assert_eq!(
            gatt_options(&config.bluetrace),
            Some(GattOptions {
                orgs: vec!["MAR".into(), "TN".into()],
                max_connections: 2,
                attempt_timeout: Duration::from_secs(8),
                reread_after: Duration::from_secs(300),
                max_reads_per_minute: 30,
            })
        );
        let resolved = settings(&config, None, false).expect("settings");
        assert_eq!(resolved.aggregator.max_tempids, 77);
        let SourceSpec::Bluez(bluez) = resolved.source else {
            panic!("the BlueZ source");
        };
        assert_eq!(bluez.gatt, gatt_options(&config.bluetrace));
        let mut changed = config.clone();
        changed.bluetrace.reread_after = Duration::from_secs(100);
        assert_eq!(needs_restart(&config, &changed), ["[bluetrace]"]);
    }
}
