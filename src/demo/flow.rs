//! The demo's steps, in order: city, broker, authority, enrollment, gateways until every
//! window is delivered, the key server's export, import and matching, then the report. Each
//! step reports progress on stderr; every wait checks the stop request.
//!
//! Drop order is the stop order: the gateways are declared last, so an error or a signal
//! stops them first, then the authority, the broker, and the work directory last.

use super::city::{self, CityChoice};
use super::processes::{self, Daemon, LogLine, Stop, command};
use super::report::{self, FoundHour, GatewayFacts};
use super::{Cli, DEFAULT_HTML, DemoError, broker, collect, html};
use crate::crypto::{Enin, RollingPeriod, Tek};
use crate::export::{
    DiagnosisKey, ECDSA_P256_SHA256_OID, ExportContents, ExportSigner, ReportType, SignatureInfo,
    write_export_zip,
};
use crate::sim::{City, GroundTruth, PhoneKind, SimConfig};
use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// How often waits look at the children and the stop request.
const POLL: Duration = Duration::from_millis(100);
/// How often a progress line is printed while the gateways run.
const PROGRESS_EVERY: Duration = Duration::from_secs(1);

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

/// Progress lines on stderr, stamped with the time since the start.
struct Progress(Instant);

impl Progress {
    fn say(&self, message: &str) {
        eprintln!("[{:6.1} s] {message}", self.0.elapsed().as_secs_f64());
    }
}

/// The work directory: a fresh temporary one removed on drop, or `--keep DIR`, kept.
struct Workspace {
    path: PathBuf,
    keep: bool,
}

impl Workspace {
    fn new(keep: Option<&Path>) -> Result<Self, DemoError> {
        let (path, keep) = match keep {
            Some(dir) => (dir.to_owned(), true),
            None => {
                let nanos = SystemTime::now()
                    .duration_since(UNIX_EPOCH)
                    .map_or(0, |d| d.subsec_nanos());
                let name = format!("venuetrace-demo-{}-{nanos:09}", std::process::id());
                (std::env::temp_dir().join(name), false)
            }
        };
        std::fs::create_dir_all(&path).map_err(|source| DemoError::Io {
            what: format!("create the work directory {}", path.display()),
            source,
        })?;
        // Keys are never overwritten, so a second run in a kept directory would fail later
        // with a less helpful message.
        let used = std::fs::read_dir(&path)
            .map_err(|source| DemoError::Io {
                what: format!("read the work directory {}", path.display()),
                source,
            })?
            .next()
            .is_some();
        if used {
            return Err(DemoError::Io {
                what: format!(
                    "use {} for --keep: it is not empty (give a new or empty directory)",
                    path.display()
                ),
                source: std::io::Error::from(std::io::ErrorKind::AlreadyExists),
            });
        }
        // Absolute, because the daemons' configurations name files in it.
        let path = std::fs::canonicalize(&path).map_err(|source| DemoError::Io {
            what: format!("resolve the work directory {}", path.display()),
            source,
        })?;
        Ok(Self { path, keep })
    }

    fn dir(&self, name: &str) -> Result<PathBuf, DemoError> {
        let dir = self.path.join(name);
        std::fs::create_dir_all(&dir).map_err(|source| DemoError::Io {
            what: format!("create {}", dir.display()),
            source,
        })?;
        Ok(dir)
    }
}

impl Drop for Workspace {
    fn drop(&mut self) {
        if self.keep {
            eprintln!("venuetrace-demo: kept its files in {}", self.path.display());
        } else {
            let _ = std::fs::remove_dir_all(&self.path);
        }
    }
}

fn write_file(path: &Path, contents: impl AsRef<[u8]>) -> Result<(), DemoError> {
    std::fs::write(path, contents).map_err(|source| DemoError::Io {
        what: format!("write {}", path.display()),
        source,
    })
}

/// A TOML basic string.
fn toml_str(text: &str) -> String {
    let mut out = String::from("\"");
    for c in text.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            c if c.is_control() => out.push_str(&format!("\\u{:04X}", c as u32)),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

fn path_str(path: &Path) -> Result<&str, DemoError> {
    path.to_str().ok_or_else(|| DemoError::Io {
        what: format!("use {} (not UTF-8)", path.display()),
        source: std::io::Error::from(std::io::ErrorKind::InvalidInput),
    })
}

/// The `public key X` line `keygen` prints.
fn public_key(stdout: &str, what: &str) -> Result<String, DemoError> {
    stdout
        .lines()
        .find_map(|l| l.strip_prefix("public key "))
        .map(|k| k.trim().to_owned())
        .ok_or_else(|| DemoError::Output {
            what: what.to_owned(),
            detail: format!("no \"public key\" line in {stdout:?}"),
        })
}

/// The sibling binaries: `--bin-dir`, else this program's directory.
fn binaries(cli: &Cli) -> Result<(PathBuf, PathBuf), DemoError> {
    let dir = match &cli.bin_dir {
        Some(dir) => dir.clone(),
        None => std::env::current_exe()
            .map_err(|source| DemoError::Io {
                what: "find this program's path".into(),
                source,
            })?
            .parent()
            .map(Path::to_owned)
            .unwrap_or_default(),
    };
    let gateway = dir.join("venuetrace-gateway");
    let authority = dir.join("venuetrace-authority");
    for bin in [&gateway, &authority] {
        if !bin.is_file() {
            return Err(DemoError::MissingBinary(bin.clone()));
        }
    }
    Ok((gateway, authority))
}

/// What a gateway's log has said so far.
#[derive(Debug, Default)]
struct GatewayLog {
    sealed: u64,
    receipted: u64,
    sealed_ms: BTreeMap<u64, i64>,
    adverts: Option<u64>,
}

impl GatewayLog {
    fn see(&mut self, line: &LogLine) {
        match line.message.as_str() {
            "sealed batch" => {
                self.sealed += 1;
                let sequence = line
                    .str("batch_id")
                    .and_then(|id| id.rsplit_once(':'))
                    .and_then(|(_, s)| s.parse::<u64>().ok());
                if let (Some(sequence), Some(ms)) = (sequence, line.timestamp_ms) {
                    self.sealed_ms.insert(sequence, ms);
                }
            }
            "batch receipted by the authority" => self.receipted += 1,
            "gateway stopped" => self.adverts = line.u64("adverts"),
            _ => {}
        }
    }
}

/// What the authority's log has said so far.
#[derive(Debug, Default)]
struct AuthorityLog {
    connected: bool,
    stored: u64,
    duplicates: Option<u64>,
}

impl AuthorityLog {
    fn see(&mut self, line: &LogLine) {
        match line.message.as_str() {
            "ingest connected" => self.connected = true,
            "stored batch" => self.stored += 1,
            "authority stopped" => self.duplicates = line.u64("duplicates"),
            _ => {}
        }
    }
}

fn lock<T>(shared: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    // A poisoned lock only means a log thread panicked mid-update; the counts stay usable.
    shared
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

fn watcher<T: Send + 'static>(
    shared: &Arc<Mutex<T>>,
    see: fn(&mut T, &LogLine),
) -> impl FnMut(&str) + Send + 'static {
    let shared = Arc::clone(shared);
    move |text: &str| {
        if let Some(line) = LogLine::parse(text) {
            see(&mut lock(&shared), &line);
        }
    }
}

/// One gateway of the demo.
struct Gateway {
    venue: String,
    id: String,
    dir: PathBuf,
    log: Arc<Mutex<GatewayLog>>,
}

/// The whole demo: runs it, prints the report and writes the page.
pub(super) fn demo(cli: &Cli, stop: &Stop) -> Result<(), DemoError> {
    let started = Instant::now();
    let progress = Progress(started);
    let mut timings: Vec<(&str, f64)> = Vec::new();
    let mut phase = Instant::now();
    let mut lap = |name: &'static str, timings: &mut Vec<(&str, f64)>| {
        timings.push((name, phase.elapsed().as_secs_f64()));
        phase = Instant::now();
    };

    let (gateway_bin, authority_bin) = binaries(cli)?;
    let mosquitto = match &cli.mosquitto {
        Some(path) => path.clone(),
        None => broker::find_binary().ok_or(broker::BrokerError::NotInstalled)?,
    };
    let html_path = match (&cli.html, cli.no_html) {
        (_, true) => None,
        (Some(path), false) => Some(path.clone()),
        (None, false) => Some(PathBuf::from(DEFAULT_HTML)),
    };

    // The city: the same config for every gateway and for the ground truth.
    let choice = CityChoice {
        seed: cli.seed,
        phones: cli.phones as usize,
        venues: cli.venues as usize,
        infected_share: cli.infected_share,
        hours: cli.hours,
    };
    let now_s = (now_ms() / 1000) as u64;
    let config = city::config(&choice, city::day_start(now_s, cli.hours));
    progress.say(&format!(
        "simulating {} phones at {} venues for {} h from {} UTC (seed {})",
        config.phones,
        config.venues.len(),
        config.hours,
        report::utc_minute(config.start_unix_s as i64),
        config.seed
    ));
    let truth = City::new(&config)?.ground_truth();
    let work = Workspace::new(cli.keep.as_deref())?;
    let city_file = work.path.join("city.json");
    write_file(
        &city_file,
        serde_json::to_vec_pretty(&config).map_err(|e| DemoError::Output {
            what: "the city configuration".into(),
            detail: e.to_string(),
        })?,
    )?;
    lap("city", &mut timings);

    // Broker and authority.
    let mut broker = broker::Broker::start(&mosquitto, &work.dir("broker")?)?;
    progress.say(&format!(
        "private Mosquitto listening on 127.0.0.1:{}",
        broker.port()
    ));
    let auth_dir = work.dir("authority")?;
    let auth_config = auth_dir.join("authority.toml");
    write_file(
        &auth_config,
        format!(
            "[authority]\nstate_dir = {dir}\nprivate_key = \"authority.key\"\n\
             database = \"authority.sqlite\"\ntimezone = \"UTC\"\n\
             [mqtt]\nhost = \"127.0.0.1\"\nport = {port}\nclient_id = \"venuetrace-demo-authority\"\n\
             [keys]\nallow_unsigned = false\n[http]\nlisten = \"\"\n[log]\nformat = \"json\"\n\
             [bluetrace]\nkey_files = [\"tempid.key\"]\n",
            dir = toml_str(path_str(&auth_dir)?),
            port = broker.port()
        ),
    )?;
    // The OpenTrace backend's TempID key, as the health ministry would hand it over.
    write_file(
        &auth_dir.join("tempid.key"),
        format!("{}\n", truth.bluetrace_key),
    )?;
    let c = path_str(&auth_config)?;
    let auth_public = public_key(
        &command(&authority_bin, &["keygen", "-c", c], stop)?,
        "venuetrace-authority keygen",
    )?;

    // Gateways: a key pair each, enrolled at the authority.
    let mut gateways = Vec::new();
    let kinds: BTreeMap<String, String> = config
        .venues
        .iter()
        .map(|v| (v.id.clone(), v.kind.clone()))
        .collect();
    for venue in &config.venues {
        let dir = work.dir(&format!("gateways/{}", venue.id))?;
        let id = format!("gw-{}", venue.id);
        let key = dir.join("gateway.key");
        let gw_public = public_key(
            &command(&gateway_bin, &["keygen", "--key", path_str(&key)?], stop)?,
            "venuetrace-gateway keygen",
        )?;
        command(
            &authority_bin,
            &[
                "gateways",
                "add",
                "--id",
                &id,
                "--venue",
                &venue.id,
                "--venue-kind",
                &venue.kind,
                "--public-key",
                &gw_public,
                "-c",
                c,
            ],
            stop,
        )?;
        write_file(
            &dir.join("gateway.toml"),
            format!(
                "[gateway]\nid = {id}\nvenue = {venue}\nstate_dir = {dir}\n\
                 [authority]\npublic_key = {key}\n[scan]\nsource = \"sim\"\n\
                 [sim]\nspeed = 0.0\ncity = {city}\n\
                 [mqtt]\nhost = \"127.0.0.1\"\nport = {port}\n\
                 resend_initial_seconds = 2\nresend_max_seconds = 10\n[log]\nformat = \"json\"\n\
                 [bluetrace]\ncollect_tempids = true\n",
                id = toml_str(&id),
                venue = toml_str(&venue.id),
                dir = toml_str(path_str(&dir)?),
                key = toml_str(&auth_public),
                city = toml_str(path_str(&city_file)?),
                port = broker.port()
            ),
        )?;
        gateways.push(Gateway {
            venue: venue.id.clone(),
            id,
            dir,
            log: Arc::new(Mutex::new(GatewayLog::default())),
        });
    }
    progress.say(&format!(
        "authority key made; {} gateways enrolled: {}",
        gateways.len(),
        gateways
            .iter()
            .map(|g| g.id.as_str())
            .collect::<Vec<_>>()
            .join(", ")
    ));

    // The authority ingesting; the gateways start once it is subscribed.
    let auth_log = Arc::new(Mutex::new(AuthorityLog::default()));
    let mut authority = {
        let mut cmd = processes::venuetrace(&authority_bin);
        cmd.args(["run", "-c", c]);
        Daemon::spawn(
            "venuetrace-authority run",
            cmd,
            &auth_dir.join("authority.log"),
            watcher(&auth_log, AuthorityLog::see),
        )?
    };
    let deadline = Instant::now() + Duration::from_secs(30);
    while !lock(&auth_log).connected {
        stop.check()?;
        if let Some(status) = authority.try_wait()? {
            return Err(DemoError::Step {
                step: authority.name().to_owned(),
                detail: format!(
                    "exited ({status}) before ingesting:\n{}",
                    authority.log_tail(20)
                ),
            });
        }
        if Instant::now() > deadline {
            return Err(DemoError::Step {
                step: authority.name().to_owned(),
                detail: format!(
                    "not connected to the broker after 30 s:\n{}",
                    authority.log_tail(20)
                ),
            });
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    // Its subscription follows the connection at once; a batch published before it lands is
    // simply resent (resend_initial_seconds), so this only saves a resend.
    std::thread::sleep(Duration::from_millis(200));
    lap("setup", &mut timings);
    progress.say("authority ingesting; starting the gateways (simulated time, full speed)");

    let gateways_started_ms = now_ms();
    let mut running: Vec<(usize, Daemon)> = Vec::new();
    for (i, g) in gateways.iter().enumerate() {
        let mut cmd = processes::venuetrace(&gateway_bin);
        cmd.arg("run")
            .arg("--exit-when-delivered")
            .arg("-c")
            .arg(g.dir.join("gateway.toml"));
        running.push((
            i,
            Daemon::spawn(
                &format!("venuetrace-gateway run ({})", g.id),
                cmd,
                &g.dir.join("gateway.log"),
                watcher(&g.log, GatewayLog::see),
            )?,
        ));
    }
    let deadline = Instant::now() + Duration::from_secs(cli.timeout);
    let mut last_progress = Instant::now();
    let status_line = |gateways: &[Gateway]| -> String {
        gateways
            .iter()
            .map(|g| {
                let log = lock(&g.log);
                format!("{} {}/{}", g.venue, log.receipted, log.sealed)
            })
            .collect::<Vec<_>>()
            .join(", ")
    };
    while !running.is_empty() {
        stop.check()?;
        let mut still = Vec::with_capacity(running.len());
        for (i, mut daemon) in running {
            match daemon.try_wait()? {
                None => still.push((i, daemon)),
                Some(status) if status.success() => {
                    let log = lock(&gateways[i].log);
                    progress.say(&format!(
                        "{}: done, {} windows sealed, {} receipted",
                        gateways[i].id, log.sealed, log.receipted
                    ));
                }
                Some(status) => {
                    stop.check()?;
                    return Err(DemoError::Step {
                        step: daemon.name().to_owned(),
                        detail: format!("exited with {status}:\n{}", daemon.log_tail(20)),
                    });
                }
            }
        }
        running = still;
        if let Some(status) = authority.try_wait()? {
            stop.check()?;
            return Err(DemoError::Step {
                step: authority.name().to_owned(),
                detail: format!(
                    "exited with {status} while ingesting:\n{}",
                    authority.log_tail(20)
                ),
            });
        }
        if Instant::now() > deadline {
            return Err(DemoError::Timeout {
                seconds: cli.timeout,
                detail: format!("receipted/sealed: {}", status_line(&gateways)),
            });
        }
        if last_progress.elapsed() >= PROGRESS_EVERY && !running.is_empty() {
            progress.say(&format!(
                "batches receipted/sealed: {}; stored at the authority: {}",
                status_line(&gateways),
                lock(&auth_log).stored
            ));
            last_progress = Instant::now();
        }
        std::thread::sleep(POLL);
    }
    // Every batch is receipted, so stored: stop the authority (it logs its counters).
    let status = authority.terminate(Duration::from_secs(15));
    if !status.is_some_and(|s| s.success()) {
        return Err(DemoError::Step {
            step: authority.name().to_owned(),
            detail: format!(
                "did not stop cleanly on SIGTERM ({status:?}):\n{}",
                authority.log_tail(20)
            ),
        });
    }
    broker.stop();
    lap("gateways and delivery", &mut timings);

    // The key server publishes the diagnosed phones' keys; the authority imports and matches.
    let (keys_exported, export, pem) = key_server(&config, &truth, &work.dir("keyserver")?)?;
    progress.say(&format!(
        "key server: {keys_exported} diagnosis keys of {} diagnosed GAEN phones, signed; importing and matching",
        truth
            .phones
            .iter()
            .filter(|p| p.infected && p.kind == PhoneKind::Gaen)
            .count()
    ));
    let imported = command(
        &authority_bin,
        &[
            "keys",
            "import",
            path_str(&export)?,
            "--public-key",
            &format!("604:v1@{}", path_str(&pem)?),
            "--format",
            "json",
            "-c",
            c,
        ],
        stop,
    )?;
    let keys_imported = serde_json::from_str::<serde_json::Value>(&imported)
        .ok()
        .and_then(|v| {
            v.as_array()
                .map(|files| files.iter().filter_map(|f| f["new"].as_u64()).sum::<u64>())
        });
    // The health ministry registers its diagnosed Wiqaytna users as cases, for the whole day.
    let bluetrace_cases: Vec<&str> = truth
        .phones
        .iter()
        .filter(|p| p.infected && p.kind == PhoneKind::Bluetrace)
        .filter_map(|p| p.uid.as_deref())
        .collect();
    let (from, to) = (
        crate::output::iso_utc(truth.start_unix_s),
        crate::output::iso_utc(truth.end_unix_s),
    );
    if !bluetrace_cases.is_empty() {
        let mut args = vec!["bluetrace", "cases", "add"];
        args.extend(bluetrace_cases.iter().copied());
        args.extend(["--from", &from, "--to", &to, "-c", c]);
        command(&authority_bin, &args, stop)?;
    }
    progress.say(&format!(
        "health ministry: {} diagnosed Wiqaytna users registered as BlueTrace cases",
        bluetrace_cases.len()
    ));
    let exposures = command(
        &authority_bin,
        &["exposures", "--format", "json", "-c", c],
        stop,
    )?;
    let found: Vec<FoundHour> =
        serde_json::from_str(&exposures).map_err(|e| DemoError::Output {
            what: "venuetrace-authority exposures --format json".into(),
            detail: e.to_string(),
        })?;
    lap("keys and matching", &mut timings);

    // Delivery records, then the report.
    let (mut stored, quarantined) = collect::authority_batches(&auth_dir.join("authority.sqlite"))?;
    let mut facts = Vec::new();
    for g in &gateways {
        let (sealed, left_in_outbox) = collect::outbox_counts(&g.dir.join("outbox.sqlite"))?;
        let log = lock(&g.log);
        facts.push(GatewayFacts {
            gateway: g.id.clone(),
            venue: g.venue.clone(),
            sealed,
            left_in_outbox,
            adverts: log.adverts,
            sealed_ms: log.sealed_ms.clone(),
            stored: stored.remove(&g.id).unwrap_or_default(),
        });
    }
    let mut report = report::build(&report::Facts {
        config: &config,
        truth: &truth,
        kinds: &kinds,
        found: &found,
        gateways: &facts,
        duplicates: lock(&auth_log).duplicates,
        quarantined,
        keys_exported,
        keys_imported,
        gateways_started_ms,
        bluetrace_cases: bluetrace_cases.len(),
    });
    lap("report", &mut timings);
    report.timings = timings
        .iter()
        .map(|(name, seconds)| report::Phase {
            name: (*name).to_owned(),
            seconds: *seconds,
        })
        .chain([report::Phase {
            name: "total".into(),
            seconds: started.elapsed().as_secs_f64(),
        }])
        .collect();
    if let Some(path) = &html_path {
        report.html = Some(
            std::path::absolute(path)
                .unwrap_or_else(|_| path.clone())
                .display()
                .to_string(),
        );
        write_file(path, html::render(&report))?;
        progress.say(&format!("page written: {}", path.display()));
    }
    progress.say("done");

    let mut out = std::io::stdout().lock();
    let written = if cli.json {
        serde_json::to_string_pretty(&report)
            .map_err(std::io::Error::other)
            .and_then(|json| writeln!(out, "{json}"))
    } else {
        report::write_text(&report, &mut out)
    };
    written.map_err(|source| DemoError::Io {
        what: "print the report".into(),
        source,
    })?;
    Ok(())
}

/// Writes the key server's signed export of every diagnosed GAEN phone's keys and its public
/// key; returns the number of keys, the zip and the PEM file.
fn key_server(
    config: &SimConfig,
    truth: &GroundTruth,
    dir: &Path,
) -> Result<(usize, PathBuf, PathBuf), DemoError> {
    let mut keys = Vec::new();
    for phone in truth
        .phones
        .iter()
        .filter(|p| p.infected && p.kind == PhoneKind::Gaen)
    {
        for t in &phone.teks {
            let bad = |detail: String| DemoError::Output {
                what: "the simulation's ground truth".into(),
                detail,
            };
            keys.push(DiagnosisKey {
                tek: Tek::from_hex(&t.key_data).map_err(|e| bad(e.to_string()))?,
                transmission_risk_level: Some(4),
                rolling_start: Enin(t.rolling_start_interval_number),
                rolling_period: RollingPeriod::new(i64::from(t.rolling_period))
                    .map_err(|e| bad(e.to_string()))?,
                report_type: Some(ReportType::ConfirmedTest),
                days_since_onset_of_symptoms: Some(1),
            });
        }
    }
    // Morocco's mobile country code as the key id, as GAEN key servers publish theirs.
    let info = SignatureInfo {
        verification_key_version: Some("v1".into()),
        verification_key_id: Some("604".into()),
        signature_algorithm: Some(ECDSA_P256_SHA256_OID.into()),
    };
    let signer = ExportSigner::generate(info.clone());
    let contents = ExportContents {
        start_timestamp: config.start_unix_s,
        end_timestamp: (now_ms() / 1000) as u64,
        region: "MA".into(),
        signature_infos: vec![info],
        keys,
        ..ExportContents::default()
    };
    let zip = dir.join("export.zip");
    let pem = dir.join("keyserver.pem");
    write_file(
        &zip,
        write_export_zip(&contents, &signer).map_err(DemoError::Export)?,
    )?;
    write_file(&pem, signer.public_key_pem())?;
    Ok((contents.keys.len(), zip, pem))
}
