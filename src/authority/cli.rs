//! Command-line definitions of `venuetrace-authority` (clap derive). Only the shape of the
//! command line lives here: parsing of values that need domain types is done by value parsers
//! so that a bad value is a usage error (exit 64) naming the option.

use crate::crypto::Tek;
use crate::output::Format;
use clap::{Args, Parser, Subcommand};
use std::path::PathBuf;

/// venuetrace authority: diagnosis keys, exposure matching and venue exposure queries.
#[derive(Debug, Parser)]
#[command(name = "venuetrace-authority", version, about, long_about = None)]
pub struct Cli {
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// Top-level commands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Diagnosis keys: inspect export files, derive RPIs.
    #[command(subcommand)]
    Keys(KeysCommand),
}

/// `keys` subcommands.
#[derive(Debug, Subcommand)]
pub enum KeysCommand {
    /// Show the contents and signature status of a diagnosis-key export (zip or export.bin).
    Inspect(InspectArgs),
    /// Print the RPIs (and AEMs) a TEK produces for consecutive intervals.
    Derive(DeriveArgs),
}

/// Arguments of `keys inspect`.
#[derive(Debug, Args)]
pub struct InspectArgs {
    /// The export file: a zip with export.bin and export.sig, or a bare export.bin.
    pub file: PathBuf,
    /// A key server's public key to verify signatures with: a PEM or DER file, or base64 of a
    /// DER SubjectPublicKeyInfo. Prefix `ID@` or `ID:VERSION@` to apply it only to signatures
    /// with that verification_key_id (and version). Repeatable.
    #[arg(long = "public-key", value_name = "[ID[:VERSION]@]KEY")]
    pub public_keys: Vec<String>,
    /// Exit with status 65 unless a signature verifies with one of the public keys.
    #[arg(long)]
    pub require_signature: bool,
    /// Output format.
    #[arg(long, value_enum, default_value_t = Format::Table)]
    pub format: Format,
}

/// Arguments of `keys derive`.
#[derive(Debug, Args)]
pub struct DeriveArgs {
    /// The Temporary Exposure Key, 32 hex digits.
    #[arg(long, value_parser = parse_tek)]
    pub tek: Tek,
    /// First ENIntervalNumber (Unix seconds / 600).
    #[arg(long)]
    pub enin: u32,
    /// Number of consecutive intervals.
    #[arg(long, default_value_t = 144, value_parser = clap::value_parser!(u32).range(1..=1_000_000))]
    pub count: u32,
    /// Plaintext metadata, 8 hex digits (e.g. 40080000: version 1.0, TX power +8 dBm); when
    /// given, each line also carries the AEM.
    #[arg(long, value_parser = parse_metadata)]
    pub metadata: Option<[u8; 4]>,
}

fn parse_tek(text: &str) -> Result<Tek, String> {
    Tek::from_hex(text).map_err(|e| e.to_string())
}

fn parse_metadata(text: &str) -> Result<[u8; 4], String> {
    let mut bytes = [0u8; 4];
    hex::decode_to_slice(text.trim(), &mut bytes)
        .map_err(|e| format!("expected 4 bytes as 8 hex digits: {e}"))?;
    Ok(bytes)
}
