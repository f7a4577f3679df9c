//! `venuetrace-demo` (run by `./scripts/demo`): the whole product on one machine, on
//! embedded defaults, checked against a simulation's ground truth.
//!
//! It builds a simulated city day ([`crate::sim`]) from the built-in venues ([`city`]),
//! starts a private Mosquitto ([`broker`]), one authority (`venuetrace-authority run` on its
//! embedded SQLite store) and one gateway per venue (`venuetrace-gateway run --source sim`
//! at full speed, each reading the same `sim.city` file), enrolls the gateways, waits until
//! every sealed window is receipted, then plays the key server: the diagnosed phones' TEKs go
//! into a signed export zip that the authority imports and matches. The authority's
//! `exposures` report is then compared with the ground truth and the delivery records
//! ([`report`]), printed, and drawn as a page ([`html`]).
//!
//! Layout: this file holds the command line, the errors and the entry point with its signal
//! handling; [`flow`] the sequence of steps; [`processes`] the child processes and their logs;
//! [`collect`] the reads of the stores after the run. [`report`] and [`html`] are pure.
//!
//! # Stopping
//!
//! SIGINT (Ctrl-C) or SIGTERM sets a [`processes::Stop`] that every wait checks (within
//! 100 ms); the step in progress returns [`DemoError::Interrupted`] and everything started is
//! undone in reverse order as it is dropped: gateways (SIGTERM, then SIGKILL after 3 s), the
//! authority, the broker, then the work directory (unless `--keep`). The exit code is then
//! 128 + the signal number, as a shell reports it.

pub mod broker;
pub mod city;
pub mod collect;
mod flow;
pub mod html;
pub mod processes;
pub mod report;

use crate::exit::Exit;
use clap::Parser;
use std::path::PathBuf;

/// Default page, in the current directory.
pub const DEFAULT_HTML: &str = "venuetrace-demo.html";

/// venuetrace demo: simulated venues, real gateways and authority, checked against the truth.
#[derive(Debug, Clone, Parser)]
#[command(name = "venuetrace-demo", version, about, long_about = None)]
pub struct Cli {
    /// Seed of the simulation: the same seed gives the same city and the same findings.
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
    /// Phones in the city (each visits any number of venues, one at a time).
    #[arg(long, default_value_t = 2500, value_parser = clap::value_parser!(u32).range(1..=1_000_000))]
    pub phones: u32,
    /// Venues, one gateway each: the first N of supermarket, souk, bus station, train station,
    /// pharmacy, hammam, café, mosque, clinic, restaurant, bank, tram stop.
    #[arg(long, default_value_t = 3, value_parser = clap::value_parser!(u32).range(1..=city::MAX_VENUES as i64))]
    pub venues: u32,
    /// Share of the phones later diagnosed (0 to 1).
    #[arg(long, default_value_t = 0.03, value_parser = share)]
    pub infected_share: f64,
    /// Length of the simulated day, hours (from 06:00 UTC; at most 168).
    #[arg(long, default_value_t = 16.0, value_parser = hours)]
    pub hours: f64,
    /// Print the figures as one JSON object on stdout (progress stays on stderr).
    #[arg(long)]
    pub json: bool,
    /// Write the page (heat map and delivery timeline) here [default: ./venuetrace-demo.html].
    #[arg(long, value_name = "FILE", conflicts_with = "no_html")]
    pub html: Option<PathBuf>,
    /// Write no page.
    #[arg(long)]
    pub no_html: bool,
    /// Work in DIR (created if missing) and keep it afterwards: configurations, keys, stores,
    /// outboxes, the export zip and every daemon's log. Default: a temporary directory,
    /// removed at the end.
    #[arg(long, value_name = "DIR")]
    pub keep: Option<PathBuf>,
    /// Directory of the venuetrace-gateway and venuetrace-authority binaries [default: this
    /// program's directory].
    #[arg(long, value_name = "DIR", env = "VENUETRACE_DEMO_BIN_DIR")]
    pub bin_dir: Option<PathBuf>,
    /// The mosquitto binary [default: /usr/sbin/mosquitto or another standard place].
    #[arg(long, value_name = "FILE", env = "VENUETRACE_DEMO_MOSQUITTO")]
    pub mosquitto: Option<PathBuf>,
    /// Give up if the gateways have not delivered everything after this many seconds.
    #[arg(long, value_name = "SECONDS", default_value_t = 600)]
    pub timeout: u64,
}

fn share(text: &str) -> Result<f64, String> {
    match text.parse::<f64>() {
        Ok(v) if (0.0..=1.0).contains(&v) => Ok(v),
        _ => Err(format!("{text:?} is not a share between 0 and 1")),
    }
}

fn hours(text: &str) -> Result<f64, String> {
    match text.parse::<f64>() {
        Ok(v) if v > 0.0 && v <= 168.0 => Ok(v),
        _ => Err(format!(
            "{text:?} is not a number of hours above 0, at most 168"
        )),
    }
}

/// Why the demo stopped before its report.
#[derive(Debug, thiserror::Error)]
pub enum DemoError {
    /// A signal asked it to stop.
    #[error("interrupted by signal {0}; everything the demo started was stopped")]
    Interrupted(i32),
    /// A binary it needs is missing.
    #[error(
        "{} not found: build the binaries first (cargo build --release --bins, as \
         ./scripts/demo does) or point --bin-dir at them",
        .0.display()
    )]
    MissingBinary(PathBuf),
    /// The private broker could not start.
    #[error(transparent)]
    Broker(#[from] broker::BrokerError),
    /// The simulated city is invalid.
    #[error(transparent)]
    City(#[from] crate::sim::SimError),
    /// A command or daemon of the demo failed.
    #[error("{step} failed: {detail}")]
    Step {
        /// What was being done.
        step: String,
        /// What went wrong (exit status, stderr or log excerpt).
        detail: String,
    },
    /// The gateways did not finish in time.
    #[error("the gateways had not delivered everything after {seconds} s (--timeout); {detail}")]
    Timeout {
        /// The limit.
        seconds: u64,
        /// Where they were.
        detail: String,
    },
    /// A file or process operation failed.
    #[error("cannot {what}")]
    Io {
        /// The operation and its object.
        what: String,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// Reading the authority's store failed.
    #[error("cannot {what}")]
    Store {
        /// The operation and its object.
        what: String,
        /// Why.
        #[source]
        source: rusqlite::Error,
    },
    /// Reading a gateway's outbox failed.
    #[error("cannot read the outbox {}", .path.display())]
    Outbox {
        /// The outbox file.
        path: PathBuf,
        /// Why.
        #[source]
        source: Box<crate::gateway::outbox::OutboxError>,
    },
    /// Output the authority printed could not be understood.
    #[error("cannot understand the output of {what}: {detail}")]
    Output {
        /// The command.
        what: String,
        /// Why.
        detail: String,
    },
    /// The key server's export could not be written.
    #[error("cannot write the key server's export")]
    Export(#[source] crate::export::ExportError),
}

impl DemoError {
    /// The process exit code: 128 + signal for an interruption, else a sysexits code.
    pub fn exit_code(&self) -> u8 {
        let exit = match self {
            DemoError::Interrupted(signo) => return (128 + signo).clamp(0, 255) as u8,
            DemoError::MissingBinary(_) => Exit::Unavailable,
            DemoError::Broker(broker::BrokerError::NotInstalled) => Exit::Unavailable,
            DemoError::Broker(_) => Exit::Unavailable,
            DemoError::City(_) => Exit::Usage,
            DemoError::Step { .. } | DemoError::Output { .. } => Exit::Software,
            DemoError::Timeout { .. } => Exit::TempFail,
            DemoError::Io { .. } | DemoError::Store { .. } | DemoError::Outbox { .. } => {
                Exit::IoErr
            }
            DemoError::Export(_) => Exit::Software,
        };
        exit.code()
    }
}

/// Runs the demo: progress on stderr, the report (text, or JSON with `--json`) on stdout,
/// the page where asked. SIGINT and SIGTERM stop it cleanly (see the module documentation).
pub fn run(cli: Cli) -> Result<(), DemoError> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|source| DemoError::Io {
            what: "start the async runtime (for signal handling)".into(),
            source,
        })?;
    let stop = processes::Stop::default();
    let work_stop = stop.clone();
    // The demo itself is blocking code (processes, files, SQLite) on a blocking thread; this
    // thread only waits for it or for a signal.
    runtime.block_on(async move {
        let mut work = tokio::task::spawn_blocking(move || flow::demo(&cli, &work_stop));
        let outcome = tokio::select! {
            outcome = &mut work => outcome,
            signo = signal() => {
                eprintln!("venuetrace-demo: signal {signo}: stopping the gateways, the authority and the broker");
                stop.request(signo);
                work.await
            }
        };
        outcome.unwrap_or_else(|e| {
            Err(DemoError::Step {
                step: "the demo's thread".into(),
                detail: e.to_string(),
            })
        })
    })
}

/// Waits for SIGINT or SIGTERM and returns its number (never returns if they cannot be
/// watched: the default actions then apply).
async fn signal() -> i32 {
    use tokio::signal::unix::{SignalKind, signal};
    let (Ok(mut int), Ok(mut term)) = (
        signal(SignalKind::interrupt()),
        signal(SignalKind::terminate()),
    ) else {
        return std::future::pending().await;
    };
    tokio::select! {
        _ = int.recv() => 2,
        _ = term.recv() => 15,
    }
}
