//! The `venuetrace-gateway` commands: argument definitions and what each command does.
//! The binary parses arguments, calls [`run`] and maps the error to an exit code.
//!
//! Today the gateway offers offline diagnostics (`decode`); the daemon (`run`,
//! `check-config`, `keygen`, `status`) come with the gateway pipeline (see README.md).

pub mod outbox;

use crate::beacon::{GaenBeacon, MalformedGaen};
use crate::exit::Exit;
use clap::{Parser, Subcommand};
use std::io::Write;

/// venuetrace gateway: listens to Exposure Notification beacons at a venue.
#[derive(Debug, Parser)]
#[command(name = "venuetrace-gateway", version, about, long_about = None)]
pub struct Cli {
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
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
}

impl GatewayError {
    /// The sysexits code for this failure.
    pub fn exit(&self) -> Exit {
        match self {
            GatewayError::NotHex(_) => Exit::Usage,
            GatewayError::Malformed(_) => Exit::DataErr,
            GatewayError::Output(_) => Exit::IoErr,
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
    }
}
