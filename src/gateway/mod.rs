//! The `venuetrace-gateway` commands: argument definitions and what each command does.
//! The binary parses arguments, calls [`run`] and maps the error to an exit code.
//!
//! Commands: `run` (the daemon), `status` (the running daemon, over D-Bus), `check-config`,
//! `keygen` / `public-key` (the key pair enrolled at the authority) and `decode` (offline
//! diagnostics). The daemon's wiring is in [`service`], its loop in [`daemon`], the radio in
//! [`bluez`] (with BlueTrace TempID reads over GATT in [`gatt`]), the D-Bus status in
//! [`status`].

pub mod bluez;
pub mod config;
pub mod daemon;
pub mod gatt;
pub mod outbox;
pub mod publisher;
pub mod replay;
pub mod service;
pub mod sim;
pub mod status;

use crate::beacon::{GaenBeacon, MalformedGaen};
use crate::exit::Exit;
use clap::{Parser, Subcommand};
use std::io::Write;

/// venuetrace gateway: listens to Exposure Notification beacons at a venue.
#[derive(Debug, Parser)]
#[command(name = "venuetrace-gateway", version, long_about = None)]
pub struct Cli {
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// The command-line definition as a [`clap::Command`], for man pages and shell completions
/// (`examples/docgen.rs`, run by the Debian packaging).
pub fn command() -> clap::Command {
    <Cli as clap::CommandFactory>::command()
}

/// Gateway commands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Decode Exposure Notification service data (UUID 0xFD6F) given as hex, as a scanner
    /// would: prints the RPI and AEM, or why the payload would be dropped as malformed.
    Decode {
        /// The service data bytes, hex (40 digits for a well-formed beacon).
        service_data: String,
    },
    /// Check a configuration file and the VENUETRACE_GATEWAY__* environment overrides: prints
    /// "FILE: ok" and a summary, or every problem (exit 78).
    CheckConfig {
        /// The configuration file.
        #[arg(default_value = config::DEFAULT_PATH)]
        file: std::path::PathBuf,
    },
    /// Run the gateway: listen, aggregate per window, seal, store in the outbox and publish
    /// until the authority receipts each batch. Stops on SIGTERM/SIGINT after sealing the
    /// current window and flushing the outbox.
    Run {
        /// The configuration file.
        #[arg(long, short, default_value = config::DEFAULT_PATH)]
        config: std::path::PathBuf,
        /// Override `scan.source`: `bluez`, `replay:PATH` or `sim`.
        #[arg(long, value_parser = parse_source)]
        source: Option<config::ScanSource>,
        /// Exit (0) once a finite source (replay, sim) has ended and every batch is
        /// receipted, instead of waiting for a signal.
        #[arg(long)]
        exit_when_delivered: bool,
    },
    /// Generate the gateway's key pair: writes the private key (mode 0600, never
    /// overwritten) and prints the public key to enroll at the authority.
    Keygen {
        /// Where to write the private key (default: the configuration's `gateway.private_key`,
        /// else /var/lib/venuetrace-gateway/gateway.key).
        #[arg(long)]
        key: Option<std::path::PathBuf>,
        /// The configuration file that names the key file.
        #[arg(long, short, default_value = config::DEFAULT_PATH)]
        config: std::path::PathBuf,
    },
    /// Show the running daemon's status, read from its D-Bus object
    /// (org.venuetrace.Gateway1 on the system bus): scanning, adverts per second, current
    /// window, outbox depth, broker connection, counters. Exit 69 if it is not running.
    Status {
        /// Output format.
        #[arg(long, value_enum, default_value_t = crate::output::Format::Table)]
        format: crate::output::Format,
    },
    /// Print the public key of the gateway's existing key pair (base64), for enrollment.
    PublicKey {
        /// The private key file (default as for `keygen`).
        #[arg(long)]
        key: Option<std::path::PathBuf>,
        /// The configuration file that names the key file.
        #[arg(long, short, default_value = config::DEFAULT_PATH)]
        config: std::path::PathBuf,
    },
}

fn parse_source(text: &str) -> Result<config::ScanSource, String> {
    match text {
        "bluez" => Ok(config::ScanSource::Bluez),
        "sim" => Ok(config::ScanSource::Sim),
        _ => match text.strip_prefix("replay:") {
            Some(path) if !path.is_empty() => Ok(config::ScanSource::Replay(path.into())),
            _ => Err("expected bluez, sim or replay:PATH".into()),
        },
    }
}

/// Why a gateway command failed.
#[derive(Debug, thiserror::Error)]
pub enum GatewayError {
    /// The argument is not hex.
    #[error("service data is not hex")]
    NotHex(#[source] hex::FromHexError),
    /// The payload is not a GAEN beacon.
    #[error("malformed beacon")]
    Malformed(#[source] MalformedGaen),
    /// Writing the result failed.
    #[error("cannot write output")]
    Output(#[source] std::io::Error),
    /// The configuration is invalid; every problem, one per line. (Shown in the message, not
    /// as a `#[source]`, so the list starts on a line of its own.)
    #[error("invalid configuration:\n{0}")]
    Config(config::ConfigErrors),
    /// The daemon or a key command failed.
    #[error(transparent)]
    Service(#[from] service::ServiceError),
    /// `status` cannot read the daemon.
    #[error(transparent)]
    Status(#[from] status::StatusError),
}

impl GatewayError {
    /// The sysexits code for this failure.
    pub fn exit(&self) -> Exit {
        match self {
            GatewayError::NotHex(_) => Exit::Usage,
            GatewayError::Malformed(_) => Exit::DataErr,
            GatewayError::Output(_) => Exit::IoErr,
            GatewayError::Config(_) => Exit::Config,
            GatewayError::Service(e) => e.exit(),
            GatewayError::Status(_) => Exit::Unavailable,
        }
    }
}

/// Runs one parsed command line.
pub fn run(cli: Cli) -> Result<(), GatewayError> {
    match cli.command {
        Command::Decode { service_data } => {
            let bytes = hex::decode(service_data.trim()).map_err(GatewayError::NotHex)?;
            let beacon = GaenBeacon::decode(&bytes).map_err(GatewayError::Malformed)?;
            writeln!(
                std::io::stdout(),
                "rpi {}\naem {}",
                beacon.rpi.to_hex(),
                beacon.aem.to_hex()
            )
            .map_err(GatewayError::Output)
        }
        Command::CheckConfig { file } => {
            let config =
                config::load(&file, &config::process_env()).map_err(GatewayError::Config)?;
            writeln!(
                std::io::stdout(),
                "{}: ok\n{}",
                file.display(),
                config.summary()
            )
            .map_err(GatewayError::Output)
        }
        Command::Run {
            config,
            source,
            exit_when_delivered,
        } => {
            service::run(&config, source, exit_when_delivered)?;
            Ok(())
        }
        Command::Keygen { key, config } => {
            let path = service::key_path(key, &config)?;
            let keys = service::keygen(&path)?;
            writeln!(
                std::io::stdout(),
                "wrote private key {}\npublic key {}\nenroll it at the authority:\n  \
                 venuetrace-authority gateways add --id GATEWAY_ID --venue VENUE --public-key {}",
                path.display(),
                keys.public(),
                keys.public()
            )
            .map_err(GatewayError::Output)
        }
        Command::Status { format } => {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .map_err(service::ServiceError::Runtime)?;
            let status = runtime.block_on(status::read())?;
            let mut out = std::io::stdout().lock();
            match format {
                crate::output::Format::Json => writeln!(
                    out,
                    "{}",
                    serde_json::to_string_pretty(&status).unwrap_or_default()
                ),
                crate::output::Format::Table => {
                    let mut table = crate::output::Table::new(["status", "value"]);
                    for (name, value) in status.rows() {
                        table.row([name, value]);
                    }
                    table.write(&mut out)
                }
            }
            .map_err(GatewayError::Output)
        }
        Command::PublicKey { key, config } => {
            let path = service::key_path(key, &config)?;
            let keys = crate::seal::KeyPair::load(&path).map_err(service::ServiceError::Key)?;
            writeln!(std::io::stdout(), "{}", keys.public()).map_err(GatewayError::Output)
        }
    }
}
