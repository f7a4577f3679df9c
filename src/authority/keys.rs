//! `venuetrace-authority keys …`: inspecting diagnosis-key exports and deriving RPIs.
//!
//! Owns the edge work of these commands: reading files and key arguments, rendering the
//! results (table or the JSON contract in README.md) and deciding exit codes. Parsing,
//! validation and signature checks are [`crate::export`]'s; derivations are [`crate::crypto`]'s.

use super::cli::{DeriveArgs, InspectArgs, KeysCommand};
use crate::crypto::{Enin, Rpi};
use crate::exit::Exit;
use crate::export::{
    self, Container, DiagnosisKey, ExportArchive, ExportError, KeyError, ReadLimits,
    SignatureCheck, SignatureStatus, VerificationKey,
};
use crate::output::{Format, Table, iso_utc};
use serde_json::{Value, json};
use std::io::{self, Write};
use std::path::{Path, PathBuf};

/// Why a `keys` command failed.
#[derive(Debug, thiserror::Error)]
pub enum KeysError {
    /// An input file could not be read.
    #[error("cannot read {}", path.display())]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: io::Error,
    },
    /// The export file is malformed.
    #[error(transparent)]
    Export(ExportError),
    /// A `--public-key` argument is not a usable key.
    #[error("--public-key {arg}: not a usable P-256 public key")]
    PublicKey {
        /// The argument as given.
        arg: String,
        /// Why.
        #[source]
        source: KeyError,
    },
    /// `--require-signature` was given and the file is not verified.
    #[error(transparent)]
    SignatureRequired(ExportError),
    /// `--enin` plus `--count` runs past the last interval number.
    #[error(
        "--enin {enin} --count {count} runs past the last interval number {}",
        u32::MAX
    )]
    IntervalOverflow {
        /// First interval.
        enin: u32,
        /// Number of intervals.
        count: u32,
    },
    /// Writing the result failed.
    #[error("cannot write output")]
    Output(#[source] io::Error),
    /// A command reached the wrong handler (a bug).
    #[error("internal error: {0}")]
    Internal(&'static str),
}

impl KeysError {
    /// The sysexits code for this failure.
    pub fn exit(&self) -> Exit {
        match self {
            KeysError::Read { source, .. } if source.kind() == io::ErrorKind::NotFound => {
                Exit::NoInput
            }
            KeysError::Read { source, .. } if source.kind() == io::ErrorKind::PermissionDenied => {
                Exit::NoInput
            }
            KeysError::Read { .. } => Exit::IoErr,
            KeysError::Export(_) | KeysError::SignatureRequired(_) => Exit::DataErr,
            KeysError::PublicKey { .. } => Exit::Config,
            KeysError::IntervalOverflow { .. } => Exit::Usage,
            KeysError::Output(_) => Exit::IoErr,
            KeysError::Internal(_) => Exit::Software,
        }
    }
}

/// Runs a `keys` subcommand.
/// `keys import` works on the store and is run by [`super::run`]; it gets here only by
/// mistake and is refused as an internal error rather than ignored.
pub fn run(command: KeysCommand, out: &mut dyn Write) -> Result<(), KeysError> {
    match command {
        KeysCommand::Inspect(args) => inspect(&args, out),
        KeysCommand::Derive(args) => derive(&args, out),
        KeysCommand::Import(_) => Err(KeysError::Internal(
            "keys import is dispatched by authority::run",
        )),
    }
}

fn read(path: &Path) -> Result<Vec<u8>, KeysError> {
    std::fs::read(path).map_err(|source| KeysError::Read {
        path: path.to_owned(),
        source,
    })
}

/// Parses a `--public-key [ID[:VERSION]@]KEY` argument. KEY is a file (PEM, DER or base64) or
/// inline base64. The whole argument naming an existing file wins over the `@` split, so paths
/// containing `@` still work; base64 never contains `@`.
pub fn parse_public_key_arg(arg: &str) -> Result<VerificationKey, KeysError> {
    let (label, key) = match arg.split_once('@') {
        Some((label, key)) if !Path::new(arg).is_file() => (Some(label), key),
        _ => (None, arg),
    };
    let material = if Path::new(key).is_file() {
        read(Path::new(key))?
    } else {
        key.as_bytes().to_vec()
    };
    let parsed = VerificationKey::parse(&material).map_err(|source| KeysError::PublicKey {
        arg: arg.to_owned(),
        source,
    })?;
    let (id, version) = match label {
        None => (None, None),
        Some(label) => match label.split_once(':') {
            Some((id, version)) => (Some(id.to_owned()), Some(version.to_owned())),
            None => (Some(label.to_owned()), None),
        },
    };
    Ok(parsed.with_id(id, version))
}

fn inspect(args: &InspectArgs, out: &mut dyn Write) -> Result<(), KeysError> {
    let keys = args
        .public_keys
        .iter()
        .map(|arg| parse_public_key_arg(arg))
        .collect::<Result<Vec<_>, _>>()?;
    let bytes = read(&args.file)?;
    let name = args.file.display().to_string();
    let archive =
        export::read_export(&name, &bytes, &ReadLimits::default()).map_err(KeysError::Export)?;
    let check = export::verify(&archive, &keys);
    match args.format {
        Format::Json => {
            let mut text = serde_json::to_string_pretty(&inspect_json(&archive, &check))
                .map_err(|e| KeysError::Output(e.into()))?;
            text.push('\n');
            out.write_all(text.as_bytes())
        }
        Format::Table => inspect_table(&archive, &check, out),
    }
    .map_err(KeysError::Output)?;
    if args.require_signature && check.status != SignatureStatus::Verified {
        let error = export::verify_required(&archive, &keys)
            .expect_err("verify and verify_required agree on the status");
        return Err(KeysError::SignatureRequired(error));
    }
    Ok(())
}

fn key_json(key: &DiagnosisKey) -> Value {
    json!({
        "key_data": key.tek.to_hex(),
        "transmission_risk_level": key.transmission_risk_level,
        "rolling_start_interval_number": key.rolling_start.0,
        "rolling_period": key.rolling_period.get(),
        "report_type": key.report_type.map(|r| r.as_str().into_owned()),
        "days_since_onset_of_symptoms": key.days_since_onset_of_symptoms,
    })
}

/// The JSON document of `keys inspect --format json` (contract documented in README.md).
pub fn inspect_json(archive: &ExportArchive, check: &SignatureCheck) -> Value {
    let c = &archive.contents;
    json!({
        "file": archive.name,
        "container": container_name(archive.container),
        "start_timestamp": c.start_timestamp,
        "end_timestamp": c.end_timestamp,
        "region": c.region,
        "batch_num": c.batch_num,
        "batch_size": c.batch_size,
        "signature_infos": c.signature_infos.iter().map(|info| json!({
            "verification_key_id": info.verification_key_id,
            "verification_key_version": info.verification_key_version,
            "signature_algorithm": info.signature_algorithm,
        })).collect::<Vec<_>>(),
        "keys": c.keys.iter().map(key_json).collect::<Vec<_>>(),
        "revised_keys": c.revised_keys.iter().map(key_json).collect::<Vec<_>>(),
        "signature": {
            "status": check.status.as_str(),
            "key_id": check.key_id,
            "key_version": check.key_version,
            "signatures": check.signatures,
            "reason": check.reason,
        },
    })
}

fn container_name(container: Container) -> &'static str {
    match container {
        Container::Zip => "zip",
        Container::BareExportBin => "export.bin",
    }
}

fn inspect_table(
    archive: &ExportArchive,
    check: &SignatureCheck,
    out: &mut dyn Write,
) -> io::Result<()> {
    let c = &archive.contents;
    let mut summary = Table::new(["file", &archive.name]);
    summary.row(["container", container_name(archive.container)]);
    summary.row(["region", &c.region]);
    summary.row([
        "time range".to_owned(),
        format!(
            "{} .. {}",
            iso_utc(c.start_timestamp),
            iso_utc(c.end_timestamp)
        ),
    ]);
    summary.row([
        "batch".to_owned(),
        format!("{} of {}", c.batch_num, c.batch_size),
    ]);
    summary.row([
        "keys".to_owned(),
        format!("{} (revised: {})", c.keys.len(), c.revised_keys.len()),
    ]);
    let mut signature = check.status.as_str().to_owned();
    if let Some(id) = &check.key_id {
        signature.push_str(&format!(" by key {id}"));
        if let Some(version) = &check.key_version {
            signature.push_str(&format!(" version {version}"));
        }
    }
    if let Some(reason) = &check.reason {
        signature.push_str(&format!(": {reason}"));
    }
    summary.row(["signature".to_owned(), signature]);
    summary.write(out)?;
    for (title, keys) in [("keys", &c.keys), ("revised keys", &c.revised_keys)] {
        if keys.is_empty() {
            continue;
        }
        writeln!(out, "\n{title}:")?;
        let mut table = Table::new([
            "KEY DATA",
            "RISK",
            "START ENIN",
            "PERIOD",
            "VALID FROM (UTC)",
            "REPORT TYPE",
            "ONSET DAYS",
        ]);
        for key in keys {
            let dash = || "-".to_owned();
            table.row([
                key.tek.to_hex(),
                key.transmission_risk_level
                    .map_or_else(dash, |r| r.to_string()),
                key.rolling_start.0.to_string(),
                key.rolling_period.get().to_string(),
                iso_utc(key.rolling_start.start_unix_seconds()),
                key.report_type
                    .map_or_else(dash, |r| r.as_str().into_owned()),
                key.days_since_onset_of_symptoms
                    .map_or_else(dash, |d| d.to_string()),
            ]);
        }
        table.write(out)?;
    }
    Ok(())
}

fn derive(args: &DeriveArgs, out: &mut dyn Write) -> Result<(), KeysError> {
    if args.enin.checked_add(args.count - 1).is_none() {
        return Err(KeysError::IntervalOverflow {
            enin: args.enin,
            count: args.count,
        });
    }
    let (rpik, aemk) = args.tek.keys();
    let cipher = rpik.cipher();
    let mut rpis = vec![Rpi::from_bytes([0; 16]); args.count as usize];
    cipher.derive_into(Enin(args.enin), &mut rpis);
    let mut text = String::with_capacity(rpis.len() * 52);
    for (i, rpi) in rpis.iter().enumerate() {
        let enin = args.enin + i as u32;
        text.push_str(&format!("{enin} {}", rpi.to_hex()));
        if let Some(metadata) = args.metadata {
            text.push(' ');
            text.push_str(&aemk.encrypt(rpi, metadata).to_hex());
        }
        text.push('\n');
    }
    out.write_all(text.as_bytes()).map_err(KeysError::Output)
}
