//! Store-backed commands of `venuetrace-authority` that manage what the authority knows:
//! venues, enrolled gateways, quarantined batches, and imported diagnosis keys.
//!
//! Each function takes an open store and writes its result to `out`; argument parsing is in
//! [`cli`](super::cli), opening the store from the configuration in [`super`].

use super::store::{Store, StoreError};
use crate::exit::Exit;
use crate::export::{self, ReadLimits, SignatureStatus, VerificationKey};
use crate::output::{ListFormat, Table, iso_utc};
use crate::seal::PublicKey;
use std::io::Write;
use std::path::{Path, PathBuf};

/// A registry or import command failed.
#[derive(Debug, thiserror::Error)]
pub enum RegistryError {
    /// The store failed or refused.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// A gateway public key argument is unusable.
    #[error(
        "--public-key {arg}: not an X25519 public key (base64 of 32 bytes, or a file holding it)"
    )]
    GatewayKey {
        /// The argument.
        arg: String,
    },
    /// An input file or directory cannot be read.
    #[error("cannot read {path}")]
    Read {
        /// The path.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// Some export files were rejected (each reported on stderr).
    #[error("{rejected} of {files} export files rejected")]
    Rejected {
        /// Rejected files.
        rejected: usize,
        /// Files examined.
        files: usize,
    },
    /// Writing the result failed.
    #[error("cannot write output")]
    Output(#[source] std::io::Error),
}

impl RegistryError {
    /// The sysexits code.
    pub fn exit(&self) -> Exit {
        match self {
            RegistryError::Store(StoreError::Registry(_)) => Exit::DataErr,
            RegistryError::Store(StoreError::Incompatible { .. }) => Exit::Config,
            RegistryError::Store(_) => Exit::IoErr,
            RegistryError::GatewayKey { .. } => Exit::Usage,
            RegistryError::Read { .. } => Exit::NoInput,
            RegistryError::Rejected { .. } => Exit::DataErr,
            RegistryError::Output(_) => Exit::IoErr,
        }
    }
}

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

fn ms_iso(ms: i64) -> String {
    iso_utc((ms.max(0) / 1000) as u64)
}

fn emit(
    table: &Table,
    json: serde_json::Value,
    format: ListFormat,
    out: &mut dyn Write,
) -> Result<(), RegistryError> {
    crate::output::write_list(table, &json, format, out).map_err(RegistryError::Output)
}

/// Parses a gateway public key: base64 text, or a file holding it (e.g. the line
/// `venuetrace-gateway keygen` printed, saved to a file).
pub fn parse_gateway_key(arg: &str) -> Result<PublicKey, RegistryError> {
    let text = if Path::new(arg).is_file() {
        std::fs::read_to_string(arg).map_err(|source| RegistryError::Read {
            path: arg.into(),
            source,
        })?
    } else {
        arg.to_owned()
    };
    let text = text.trim().trim_start_matches("public key ").trim();
    PublicKey::parse(text).map_err(|_| RegistryError::GatewayKey {
        arg: arg.to_owned(),
    })
}

/// `gateways add`.
#[allow(clippy::too_many_arguments)]
pub fn gateways_add(
    store: &mut dyn Store,
    id: &str,
    venue: &str,
    venue_kind: &str,
    public_key: &str,
    label: Option<&str>,
    calibration_db: i32,
    out: &mut dyn Write,
) -> Result<(), RegistryError> {
    let key = parse_gateway_key(public_key)?;
    store.add_gateway(
        id,
        venue,
        venue_kind,
        *key.as_bytes(),
        label,
        calibration_db,
        now_ms(),
    )?;
    writeln!(out, "enrolled gateway {id} at venue {venue}").map_err(RegistryError::Output)
}

/// `gateways revoke`.
pub fn gateways_revoke(
    store: &mut dyn Store,
    id: &str,
    out: &mut dyn Write,
) -> Result<(), RegistryError> {
    store.revoke_gateway(id, now_ms())?;
    writeln!(
        out,
        "revoked gateway {id}: its batches are refused from now on"
    )
    .map_err(RegistryError::Output)
}

/// `gateways list`.
pub fn gateways_list(
    store: &dyn Store,
    format: ListFormat,
    out: &mut dyn Write,
) -> Result<(), RegistryError> {
    let gateways = store.gateways()?;
    let mut table = Table::new([
        "id",
        "venue",
        "label",
        "calibration_db",
        "enrolled",
        "revoked",
        "public_key",
    ]);
    for g in &gateways {
        table.row([
            g.id.clone(),
            g.venue.clone(),
            g.label.clone().unwrap_or_default(),
            g.calibration_db.to_string(),
            ms_iso(g.enrolled_ms),
            g.revoked_ms.map(ms_iso).unwrap_or_default(),
            PublicKey::from_bytes(g.public_key).to_base64(),
        ]);
    }
    emit(&table, serde_json::json!(gateways), format, out)
}

/// `gateways status`: what each gateway has delivered.
pub fn gateways_status(
    store: &dyn Store,
    format: ListFormat,
    out: &mut dyn Write,
) -> Result<(), RegistryError> {
    let status = store.gateway_status()?;
    let now = now_ms();
    let mut table = Table::new([
        "id",
        "venue",
        "batches",
        "last_seq",
        "last_window",
        "last_received",
        "lag_s",
        "adverts",
        "malformed",
        "dropped",
        "state",
    ]);
    for s in &status {
        let lag = s.last_window_start_s.map(|w| now / 1000 - w);
        table.row([
            s.id.clone(),
            s.venue.clone(),
            s.batches.to_string(),
            s.last_sequence.map(|v| v.to_string()).unwrap_or_default(),
            s.last_window_start_s
                .map(|w| iso_utc(w.max(0) as u64))
                .unwrap_or_default(),
            s.last_received_ms.map(ms_iso).unwrap_or_default(),
            lag.map(|l| l.to_string()).unwrap_or_default(),
            s.adverts.to_string(),
            s.malformed.to_string(),
            s.dropped.to_string(),
            if s.revoked { "revoked" } else { "enrolled" }.to_string(),
        ]);
    }
    emit(&table, serde_json::json!(status), format, out)
}

/// `venues add`.
pub fn venues_add(
    store: &mut dyn Store,
    name: &str,
    kind: &str,
    location: Option<&str>,
    out: &mut dyn Write,
) -> Result<(), RegistryError> {
    if !crate::batch::valid_id(name) {
        return Err(StoreError::Registry(format!(
            "venue name {name:?} is not 1-64 characters of [A-Za-z0-9._-]"
        ))
        .into());
    }
    let id = store.upsert_venue(name, kind, location)?;
    writeln!(out, "venue {name} ({kind}) is number {id}").map_err(RegistryError::Output)
}

/// `venues list`.
pub fn venues_list(
    store: &dyn Store,
    format: ListFormat,
    out: &mut dyn Write,
) -> Result<(), RegistryError> {
    let venues = store.venues()?;
    let mut table = Table::new(["venue", "kind", "location"]);
    for v in &venues {
        table.row([
            v.name.clone(),
            v.kind.clone(),
            v.location.clone().unwrap_or_default(),
        ]);
    }
    emit(&table, serde_json::json!(venues), format, out)
}

/// `batches quarantine`.
pub fn quarantine_list(
    store: &dyn Store,
    limit: usize,
    format: ListFormat,
    out: &mut dyn Write,
) -> Result<(), RegistryError> {
    let list = store.quarantined(limit)?;
    let mut table = Table::new(["received", "batch_id", "topic", "size", "reason"]);
    for q in &list {
        table.row([
            ms_iso(q.received_ms),
            q.batch_id.clone().unwrap_or_else(|| "?".into()),
            q.topic.clone(),
            q.size.to_string(),
            q.reason.clone(),
        ]);
    }
    emit(&table, serde_json::json!(list), format, out)
}

/// Export files under `paths`: files as given, directories searched (not recursively) for
/// `*.zip` and `*.bin`, in name order.
pub fn export_files(paths: &[PathBuf]) -> Result<Vec<PathBuf>, RegistryError> {
    let mut files = Vec::new();
    for path in paths {
        if path.is_dir() {
            let mut found: Vec<PathBuf> = std::fs::read_dir(path)
                .map_err(|source| RegistryError::Read {
                    path: path.clone(),
                    source,
                })?
                .filter_map(|e| e.ok().map(|e| e.path()))
                .filter(|p| {
                    p.is_file()
                        && matches!(p.extension().and_then(|e| e.to_str()), Some("zip" | "bin"))
                })
                .collect();
            found.sort();
            files.extend(found);
        } else {
            files.push(path.clone());
        }
    }
    Ok(files)
}

/// What importing one file did.
#[derive(Debug, Clone, serde::Serialize)]
pub struct FileImport {
    /// The file.
    pub file: String,
    /// Signature status.
    pub signature: &'static str,
    /// Imported or why not.
    pub result: String,
    /// New keys.
    pub new: u64,
    /// Keys revised.
    pub revised: u64,
    /// Keys already known.
    pub unchanged: u64,
}

/// `keys import`: reads each export, requires a verified signature (or, with
/// `allow_unsigned`, accepts a bare `export.bin` without one — never a zip whose signature is
/// invalid), and imports its keys and revised keys in one transaction per file. Idempotent.
/// Rejected files are reported and make the command fail after the others are imported.
pub fn keys_import(
    store: &mut dyn Store,
    paths: &[PathBuf],
    verification_keys: &[VerificationKey],
    allow_unsigned: bool,
    progress: &mut dyn Write,
    out: &mut dyn Write,
    format: ListFormat,
) -> Result<Vec<FileImport>, RegistryError> {
    let files = export_files(paths)?;
    let mut results = Vec::new();
    let mut rejected = 0;
    for (n, file) in files.iter().enumerate() {
        let _ = writeln!(progress, "[{}/{}] {}", n + 1, files.len(), file.display());
        let name = file.display().to_string();
        let outcome = (|| -> Result<(SignatureStatus, super::store::KeyImport), String> {
            let bytes = std::fs::read(file).map_err(|e| format!("cannot read: {e}"))?;
            let archive = export::read_export(&name, &bytes, &ReadLimits::default())
                .map_err(|e| crate::exit::describe(&e))?;
            let check = export::verify(&archive, verification_keys);
            let acceptable = match check.status {
                SignatureStatus::Verified => true,
                SignatureStatus::Absent => allow_unsigned,
                SignatureStatus::Unverified | SignatureStatus::Invalid => false,
            };
            if !acceptable {
                return Err(format!(
                    "signature {}: {}{}",
                    check.status,
                    check.reason.clone().unwrap_or_default(),
                    if check.status == SignatureStatus::Absent {
                        " (use --allow-unsigned for a bare export.bin)"
                    } else {
                        ""
                    }
                ));
            }
            let mut keys = archive.contents.keys.clone();
            keys.extend(archive.contents.revised_keys.iter().cloned());
            let imported = store
                .import_keys(&keys, &name, now_ms())
                .map_err(|e| crate::exit::describe(&e))?;
            Ok((check.status, imported))
        })();
        results.push(match outcome {
            Ok((status, i)) => FileImport {
                file: name,
                signature: status.as_str(),
                result: "imported".into(),
                new: i.new,
                revised: i.revised,
                unchanged: i.unchanged,
            },
            Err(reason) => {
                rejected += 1;
                let _ = writeln!(progress, "venuetrace-authority: rejected {name}: {reason}");
                FileImport {
                    file: name,
                    signature: "-",
                    result: format!("rejected: {reason}"),
                    new: 0,
                    revised: 0,
                    unchanged: 0,
                }
            }
        });
    }
    let mut table = Table::new(["file", "signature", "new", "revised", "unchanged", "result"]);
    for r in &results {
        table.row([
            r.file.clone(),
            r.signature.to_string(),
            r.new.to_string(),
            r.revised.to_string(),
            r.unchanged.to_string(),
            r.result.clone(),
        ]);
    }
    emit(&table, serde_json::json!(results), format, out)?;
    if rejected > 0 {
        return Err(RegistryError::Rejected {
            rejected,
            files: files.len(),
        });
    }
    Ok(results)
}
