//! Command-line definitions of `venuetrace-authority` (clap derive). Only the shape of the
//! command line lives here: parsing of values that need domain types is done by value parsers
//! so that a bad value is a usage error (exit 64) naming the option.

use crate::bluetrace::Uid;
use crate::crypto::Tek;
use crate::output::{Format, ListFormat};
use clap::{Args, Parser, Subcommand};
use std::path::PathBuf;

/// venuetrace authority: diagnosis keys, exposure matching and venue exposure queries.
#[derive(Debug, Parser)]
#[command(name = "venuetrace-authority", version, long_about = None)]
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

/// Top-level commands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Diagnosis keys: inspect export files, derive RPIs.
    #[command(subcommand)]
    Keys(KeysCommand),
    /// Check a configuration file and the VENUETRACE_AUTHORITY__* environment overrides:
    /// prints "FILE: ok" and a summary, or every problem (exit 78).
    CheckConfig {
        /// The configuration file.
        #[arg(default_value = super::config::DEFAULT_PATH)]
        file: PathBuf,
    },
    /// Generate the authority's X25519 key pair (batches are sealed to it): writes the private
    /// key (mode 0600, never overwritten) and prints the public key for gateways'
    /// `authority.public_key`.
    Keygen {
        /// Where to write the private key (default: the configuration's
        /// `authority.private_key`).
        #[arg(long)]
        key: Option<PathBuf>,
        /// Store and configuration.
        #[command(flatten)]
        store: StoreArgs,
    },
    /// Ingest batches from the broker until SIGTERM/SIGINT: open, validate, store once,
    /// receipt; quarantine what cannot be used; purge by retention; re-match after new batches.
    Run {
        /// Store and configuration.
        #[command(flatten)]
        store: StoreArgs,
    },
    /// Match diagnosis keys against sightings: the days touched by keys or batches added since
    /// the last match (also done by `run` after new batches and by `keys import`), or all.
    Match {
        /// Recompute every day instead of only what changed.
        #[arg(long)]
        full: bool,
        /// Store and configuration.
        #[command(flatten)]
        store: StoreArgs,
    },
    /// Venue-hours where an infectious person was present: GAEN exposure events, minutes,
    /// scores and how many other visitors shared that time, and BlueTrace cases and contacts
    /// present, side by side. Counts only: never anything that identifies a phone.
    Exposures(ExposuresArgs),
    /// BlueTrace (Wiqaytna) cases, and the contacts of a case (only where the configuration
    /// allows identifying them).
    #[command(subcommand)]
    Bluetrace(BluetraceCommand),
    /// Enrolled gateways.
    #[command(subcommand)]
    Gateways(GatewaysCommand),
    /// Venues: lists them (`venues`, `venues list`) or adds one (`venues add`).
    Venues(VenuesArgs),
    /// Received batches.
    #[command(subcommand)]
    Batches(BatchesCommand),
}

/// Where the store is: the configuration's `authority.database`, or `--database`.
#[derive(Debug, Clone, Args)]
pub struct StoreArgs {
    /// The configuration file (optional with --database: defaults are used when it is absent).
    #[arg(long, short, default_value = super::config::DEFAULT_PATH)]
    pub config: PathBuf,
    /// The store to use instead of the configuration's `authority.database`: an SQLite file
    /// or a postgres:// URL.
    #[arg(long)]
    pub database: Option<String>,
}

/// Arguments of `exposures`.
#[derive(Debug, Args)]
pub struct ExposuresArgs {
    /// Only this venue.
    #[arg(long)]
    pub venue: Option<String>,
    /// From this time (date or date-time, in the configured time zone unless an offset is given).
    #[arg(long)]
    pub from: Option<String>,
    /// Up to this time (exclusive).
    #[arg(long)]
    pub to: Option<String>,
    /// Only GAEN venue-hours whose highest window score is at least this (weighted seconds);
    /// venue-hours with BlueTrace cases are listed whatever their score.
    #[arg(long, default_value_t = 0.0)]
    pub min_score: f64,
    /// Output format.
    #[arg(long, value_enum, default_value_t = ListFormat::Table)]
    pub format: ListFormat,
    /// Store and configuration.
    #[command(flatten)]
    pub store: StoreArgs,
}

/// `bluetrace` subcommands.
#[derive(Debug, Subcommand)]
pub enum BluetraceCommand {
    /// Registered cases: whose TempID presences count as infectious, and when. `exposures`
    /// counts them per venue-hour (bt_cases, bt_contacts).
    #[command(subcommand)]
    Cases(CasesCommand),
    /// The people present with a case at a venue (their UIDs, for the health team's SMS
    /// service), with when, for how long and how near the gateway. Refused (exit 77) unless
    /// bluetrace.identify_contacts = true; every use is first appended to
    /// bluetrace.audit_log, and refused when that cannot be written.
    Contacts(ContactsArgs),
    /// Where a case was: each venue and time it was seen (or placed by its encounter list),
    /// on what basis, and how many others were there. It traces a person, so it is gated and
    /// audited like `contacts`.
    Visits(ContactsArgs),
}

/// `bluetrace cases` subcommands.
#[derive(Debug, Subcommand)]
pub enum CasesCommand {
    /// Register cases (or change their period and label): one or more UIDs with the same
    /// infectious period, then recompute the venue-hours once.
    Add {
        /// The cases' UIDs: the 28-character base64 form the BlueTrace backend keeps.
        #[arg(value_parser = parse_uid, required = true, num_args = 1..)]
        uids: Vec<Uid>,
        /// Infectious from (date or date-time, in the configured time zone unless an offset is
        /// given).
        #[arg(long)]
        from: String,
        /// Infectious until (exclusive).
        #[arg(long)]
        to: String,
        /// A label for people (e.g. the health team's file number).
        #[arg(long)]
        label: Option<String>,
        /// The case's uploaded encounter list (with one UID only; the JSON its phone
        /// uploaded): its records within the period kept, encrypted, with the case, so its
        /// venue-hours count also where the phones it met were read. Replaces a list stored
        /// before; without it a stored list keeps its records within the (new) period.
        #[arg(long, value_name = "FILE")]
        encounters: Option<PathBuf>,
        /// Store and configuration.
        #[command(flatten)]
        store: StoreArgs,
    },
    /// List registered cases.
    List {
        /// Output format.
        #[arg(long, value_enum, default_value_t = ListFormat::Table)]
        format: ListFormat,
        /// Store and configuration.
        #[command(flatten)]
        store: StoreArgs,
    },
    /// Remove a case, then recompute the venue-hours.
    Remove {
        /// The case's UID (28 characters of base64).
        #[arg(value_parser = parse_uid)]
        uid: Uid,
        /// Store and configuration.
        #[command(flatten)]
        store: StoreArgs,
    },
}

/// Arguments of `bluetrace contacts`.
#[derive(Debug, Args)]
pub struct ContactsArgs {
    /// The case's UID (28 characters of base64).
    #[arg(long, value_parser = parse_uid)]
    pub uid: Uid,
    /// From this time (date or date-time, in the configured time zone unless an offset is
    /// given).
    #[arg(long)]
    pub from: String,
    /// Up to this time (exclusive).
    #[arg(long)]
    pub to: String,
    /// Who asks, for the audit log (default: $SUDO_USER, else $USER, else the user id).
    #[arg(long)]
    pub operator: Option<String>,
    /// The case's uploaded encounter list (the JSON its phone uploaded: a "records" array of
    /// timestamp, msg and org): places the case where the phones it met were read, even where
    /// its own TempIDs were not. Without it, the list stored with a registered case (`cases add
    /// --encounters`) is used, if any.
    #[arg(long, value_name = "FILE")]
    pub encounters: Option<PathBuf>,
    /// Output format.
    #[arg(long, value_enum, default_value_t = ListFormat::Table)]
    pub format: ListFormat,
    /// Store and configuration.
    #[command(flatten)]
    pub store: StoreArgs,
}

/// `gateways` subcommands.
#[derive(Debug, Subcommand)]
pub enum GatewaysCommand {
    /// Enroll a gateway at a venue (the venue is created if new).
    Add {
        /// The gateway's id (as in its gateway.toml).
        #[arg(long)]
        id: String,
        /// The venue's name.
        #[arg(long)]
        venue: String,
        /// The venue's kind, when the venue is new: supermarket, market, station, bus...
        #[arg(long, default_value = "venue")]
        venue_kind: String,
        /// The gateway's public key: base64 as `venuetrace-gateway keygen` printed it, or a file.
        #[arg(long)]
        public_key: String,
        /// A label for people.
        #[arg(long)]
        label: Option<String>,
        /// Receiver calibration, dB, added to the RSSI this gateway reports.
        #[arg(long, default_value_t = 0, allow_negative_numbers = true, value_parser = clap::value_parser!(i32).range(-30..=30))]
        calibration: i32,
        /// Store and configuration.
        #[command(flatten)]
        store: StoreArgs,
    },
    /// List enrolled gateways.
    List {
        /// Output format.
        #[arg(long, value_enum, default_value_t = ListFormat::Table)]
        format: ListFormat,
        /// Store and configuration.
        #[command(flatten)]
        store: StoreArgs,
    },
    /// Revoke a gateway: its batches are refused from now on.
    Revoke {
        /// The gateway's id.
        id: String,
        /// Store and configuration.
        #[command(flatten)]
        store: StoreArgs,
    },
    /// What each gateway delivered: batches, last window, delivery lag, counters.
    Status {
        /// Output format.
        #[arg(long, value_enum, default_value_t = ListFormat::Table)]
        format: ListFormat,
        /// Store and configuration.
        #[command(flatten)]
        store: StoreArgs,
    },
}

/// Arguments of `venues`: without a subcommand, the list.
#[derive(Debug, Args)]
pub struct VenuesArgs {
    /// What to do (default: list).
    #[command(subcommand)]
    pub command: Option<VenuesCommand>,
    /// Output format of the list.
    #[arg(long, value_enum, default_value_t = ListFormat::Table)]
    pub format: ListFormat,
    /// Store and configuration.
    #[command(flatten)]
    pub store: StoreArgs,
}

/// `venues` subcommands.
#[derive(Debug, Subcommand)]
pub enum VenuesCommand {
    /// Add a venue, or update its kind and location.
    Add {
        /// Its name (the id gateways are configured with).
        name: String,
        /// Its kind: supermarket, market, station, bus...
        #[arg(long)]
        kind: String,
        /// Where it is (free text).
        #[arg(long)]
        location: Option<String>,
        /// Store and configuration.
        #[command(flatten)]
        store: StoreArgs,
    },
    /// List venues.
    List {
        /// Output format.
        #[arg(long, value_enum, default_value_t = ListFormat::Table)]
        format: ListFormat,
        /// Store and configuration.
        #[command(flatten)]
        store: StoreArgs,
    },
}

/// `batches` subcommands.
#[derive(Debug, Subcommand)]
pub enum BatchesCommand {
    /// Batches refused by ingest.
    #[command(subcommand)]
    Quarantine(QuarantineCommand),
}

/// `batches quarantine` subcommands.
#[derive(Debug, Subcommand)]
pub enum QuarantineCommand {
    /// Refused batches, newest first, with the reason (their hash and size; the bytes are not
    /// kept).
    List {
        /// How many to show.
        #[arg(long, default_value_t = 50)]
        limit: usize,
        /// Output format.
        #[arg(long, value_enum, default_value_t = ListFormat::Table)]
        format: ListFormat,
        /// Store and configuration.
        #[command(flatten)]
        store: StoreArgs,
    },
}

/// Arguments of `keys import`.
#[derive(Debug, Args)]
pub struct ImportArgs {
    /// Export files (zip, or bare export.bin with --allow-unsigned) or directories of them.
    #[arg(required = true)]
    pub files: Vec<PathBuf>,
    /// A key server's public key, as for `keys inspect`; added to the configuration's
    /// `keys.public_keys`. Repeatable.
    #[arg(long = "public-key", value_name = "[ID[:VERSION]@]KEY")]
    pub public_keys: Vec<String>,
    /// Accept files without a signature (a bare export.bin). Never accepts an invalid one.
    #[arg(long)]
    pub allow_unsigned: bool,
    /// Do not match after importing.
    #[arg(long)]
    pub no_match: bool,
    /// Output format.
    #[arg(long, value_enum, default_value_t = ListFormat::Table)]
    pub format: ListFormat,
    /// Store and configuration.
    #[command(flatten)]
    pub store: StoreArgs,
}

/// `keys` subcommands.
#[derive(Debug, Subcommand)]
pub enum KeysCommand {
    /// Show the contents and signature status of a diagnosis-key export (zip or export.bin).
    Inspect(InspectArgs),
    /// Print the RPIs (and AEMs) a TEK produces for consecutive intervals.
    Derive(DeriveArgs),
    /// Import diagnosis-key exports into the store (signatures verified), then match.
    Import(ImportArgs),
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

fn parse_uid(text: &str) -> Result<Uid, String> {
    match Uid::from_base64(text) {
        Some(uid) if text.trim().len() == 28 => Ok(uid),
        _ => Err("expected a BlueTrace UID: 28 characters of base64 (21 bytes)".into()),
    }
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
