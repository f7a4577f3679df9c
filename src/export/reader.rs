//! Reading an export file from bytes: zip or bare `export.bin` detection, zip extraction with
//! resource limits, header check, protobuf decoding and validation into [`ExportContents`].
//!
//! Hostile input is the normal case here (files come from the network): nothing in this file
//! panics or allocates in proportion to what a header claims. Decompressed sizes are enforced
//! while reading, the number of zip entries and of keys is capped before the work is done, and
//! every problem becomes an [`ExportError`] naming the file and the part. Checking `export.sig`
//! is left to `signature`; opening files to the caller.

use super::error::{ExportError, ExportErrorKind, KeyList, escape_prefix};
use super::proto::{self, count_length_delimited};
use super::{DiagnosisKey, EXPORT_BIN_HEADER, ExportContents, ReportType, SignatureInfo};
use crate::crypto::{Enin, RollingPeriod, Tek};
use prost::Message;
use std::collections::HashMap;
use std::fmt;
use std::io::{Cursor, Read};
use zip::ZipArchive;
use zip::result::ZipError;

/// Entries a zip may list. Real exports hold two; anything far beyond is not an export, and each
/// listed entry costs memory when the central directory is parsed.
pub const MAX_ZIP_ENTRIES: usize = 64;

/// Signature infos an `export.bin` may hold. Real files hold one per signing key, i.e. one or two.
pub const MAX_SIGNATURE_INFOS: usize = 100;

const ZIP_LOCAL_HEADER_MAGIC: &[u8; 4] = b"PK\x03\x04";
/// The end-of-central-directory magic starts an empty zip, which is still a zip (missing
/// `export.bin`), not "not an export".
const ZIP_EMPTY_ARCHIVE_MAGIC: &[u8; 4] = b"PK\x05\x06";

/// How much work reading one file may cost.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ReadLimits {
    /// Largest decompressed zip entry (or bare `export.bin`) accepted, in bytes.
    pub max_entry_bytes: u64,
    /// Most keys (`keys` and `revised_keys` together) accepted in one file.
    pub max_keys: usize,
}

impl Default for ReadLimits {
    /// 64 MiB per entry and 1,000,000 keys: Google's server splits batches at 17,000 keys per
    /// file (about 1 MiB), so this is generous for real files and still bounded for hostile ones.
    fn default() -> Self {
        Self {
            max_entry_bytes: 64 * 1024 * 1024,
            max_keys: 1_000_000,
        }
    }
}

/// What the file was.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Container {
    /// A zip holding `export.bin` (and normally `export.sig`).
    Zip,
    /// A bare `export.bin`, which can carry no signature.
    BareExportBin,
}

/// One export file, read and validated; its signature is not yet checked (see
/// [`verify`](super::verify)).
#[derive(Clone, PartialEq, Eq)]
pub struct ExportArchive {
    /// Display name given by the caller.
    pub name: String,
    /// Zip or bare `export.bin`.
    pub container: Container,
    /// The exact bytes of `export.bin`, header included: what the signatures sign.
    pub export_bin: Vec<u8>,
    /// The bytes of `export.sig`, if the zip has one; unparsed, as judging it is verification.
    pub export_sig: Option<Vec<u8>>,
    /// The validated contents of `export_bin`.
    pub contents: ExportContents,
}

impl fmt::Debug for ExportArchive {
    // Byte vectors are summarised: kilobytes of decimal numbers help nobody in a log.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ExportArchive")
            .field("name", &self.name)
            .field("container", &self.container)
            .field("export_bin_len", &self.export_bin.len())
            .field("export_sig_len", &self.export_sig.as_ref().map(Vec::len))
            .field("contents", &self.contents)
            .finish()
    }
}

/// Reads an export file: a zip with `export.bin` (and optionally `export.sig`), or a bare
/// `export.bin`, told apart by their first bytes.
///
/// `name` is only used in error messages. The signature is not checked here: a missing or bad
/// `export.sig` is reported by [`verify`](super::verify), so that unsigned files can still be
/// inspected.
pub fn read_export(
    name: &str,
    bytes: &[u8],
    limits: &ReadLimits,
) -> Result<ExportArchive, ExportError> {
    let (container, export_bin, export_sig) =
        read(bytes, limits).map_err(|kind| ExportError::new(name, kind))?;
    let contents =
        parse_export_bin(&export_bin, limits).map_err(|kind| ExportError::new(name, kind))?;
    Ok(ExportArchive {
        name: name.to_owned(),
        container,
        export_bin,
        export_sig,
        contents,
    })
}

type Entries = (Container, Vec<u8>, Option<Vec<u8>>);

fn read(bytes: &[u8], limits: &ReadLimits) -> Result<Entries, ExportErrorKind> {
    if bytes.is_empty() {
        return Err(ExportErrorKind::Empty);
    }
    if bytes.starts_with(ZIP_LOCAL_HEADER_MAGIC) || bytes.starts_with(ZIP_EMPTY_ARCHIVE_MAGIC) {
        let (export_bin, export_sig) = read_zip(bytes, limits)?;
        return Ok((Container::Zip, export_bin, export_sig));
    }
    // A bare export.bin, or a cut-off or mislabelled one: let the header check say which. Only
    // input that looks like neither is "not an export".
    if EXPORT_BIN_HEADER.starts_with(bytes.get(..4).unwrap_or(bytes)) {
        if u64::try_from(bytes.len()).unwrap_or(u64::MAX) > limits.max_entry_bytes {
            return Err(ExportErrorKind::EntryTooLarge {
                entry: "export.bin",
                limit: limits.max_entry_bytes,
            });
        }
        return Ok((Container::BareExportBin, bytes.to_vec(), None));
    }
    Err(ExportErrorKind::NotAnExport {
        found: escape_prefix(bytes),
    })
}

fn read_zip(
    bytes: &[u8],
    limits: &ReadLimits,
) -> Result<(Vec<u8>, Option<Vec<u8>>), ExportErrorKind> {
    let mut archive = ZipArchive::new(Cursor::new(bytes)).map_err(ExportErrorKind::BadZip)?;
    if archive.len() > MAX_ZIP_ENTRIES {
        return Err(ExportErrorKind::TooManyEntries {
            count: archive.len(),
            limit: MAX_ZIP_ENTRIES,
        });
    }
    // Two entries with one name would let a signature checked over one be paired with keys
    // read from the other by some other tool. Real exports never repeat a name: refuse.
    if archive.has_duplicate_names() {
        return Err(ExportErrorKind::DuplicateEntries);
    }
    let export_bin = read_entry(&mut archive, "export.bin", limits.max_entry_bytes)?
        .ok_or(ExportErrorKind::MissingExportBin)?;
    let export_sig = read_entry(&mut archive, "export.sig", limits.max_entry_bytes)?;
    Ok((export_bin, export_sig))
}

/// The decompressed bytes of entry `entry`, `None` if the zip has no such entry.
fn read_entry(
    archive: &mut ZipArchive<Cursor<&[u8]>>,
    entry: &'static str,
    limit: u64,
) -> Result<Option<Vec<u8>>, ExportErrorKind> {
    let file = match archive.by_name(entry) {
        Ok(file) => file,
        Err(ZipError::FileNotFound) => return Ok(None),
        Err(source) => return Err(ExportErrorKind::BadZipEntry { entry, source }),
    };
    // The sizes in the zip headers are claims, not facts (a zip bomb lies about them): never
    // preallocate from them, and stop decompressing one byte past the limit.
    let mut data = Vec::new();
    file.take(limit.saturating_add(1))
        .read_to_end(&mut data)
        .map_err(|error| ExportErrorKind::BadZipEntry {
            entry,
            source: ZipError::Io(error),
        })?;
    if u64::try_from(data.len()).unwrap_or(u64::MAX) > limit {
        return Err(ExportErrorKind::EntryTooLarge { entry, limit });
    }
    Ok(Some(data))
}

/// Checks the header of `export_bin`, decodes its protobuf body and validates it.
fn parse_export_bin(
    export_bin: &[u8],
    limits: &ReadLimits,
) -> Result<ExportContents, ExportErrorKind> {
    let body = match export_bin.strip_prefix(EXPORT_BIN_HEADER) {
        Some(body) => body,
        None if EXPORT_BIN_HEADER.starts_with(export_bin) => {
            return Err(ExportErrorKind::Truncated {
                len: export_bin.len(),
            });
        }
        None => {
            return Err(ExportErrorKind::BadHeader {
                found: escape_prefix(export_bin),
            });
        }
    };
    let [keys, revised_keys, signature_infos] = count_length_delimited(body, [7, 8, 6]);
    let key_count = keys.saturating_add(revised_keys);
    if key_count > limits.max_keys {
        return Err(ExportErrorKind::TooManyKeys {
            count: key_count,
            limit: limits.max_keys,
        });
    }
    if signature_infos > MAX_SIGNATURE_INFOS {
        return Err(ExportErrorKind::TooManySignatureInfos {
            count: signature_infos,
            limit: MAX_SIGNATURE_INFOS,
        });
    }
    let export =
        proto::TemporaryExposureKeyExport::decode(body).map_err(ExportErrorKind::Protobuf)?;
    validate(export)
}

/// Turns the wire message into domain values, rejecting what the format forbids.
fn validate(export: proto::TemporaryExposureKeyExport) -> Result<ExportContents, ExportErrorKind> {
    let (batch_num, batch_size) = batch_position(export.batch_num, export.batch_size)?;
    Ok(ExportContents {
        start_timestamp: export.start_timestamp.unwrap_or(0),
        end_timestamp: export.end_timestamp.unwrap_or(0),
        region: export.region.unwrap_or_default(),
        batch_num,
        batch_size,
        signature_infos: export
            .signature_infos
            .into_iter()
            .map(SignatureInfo::from)
            .collect(),
        keys: validate_keys("keys", export.keys)?,
        revised_keys: validate_keys("revised_keys", export.revised_keys)?,
    })
}

/// The file's position in its batch. An absent field is 1: a file that does not say it is part
/// of a larger batch is a whole batch. The order is then always checked, so that the domain
/// value never claims e.g. "batch 3 of 1".
fn batch_position(
    batch_num: Option<i32>,
    batch_size: Option<i32>,
) -> Result<(u32, u32), ExportErrorKind> {
    let (batch_num, batch_size) = (batch_num.unwrap_or(1), batch_size.unwrap_or(1));
    match (u32::try_from(batch_num), u32::try_from(batch_size)) {
        (Ok(num), Ok(size)) if 1 <= num && num <= size => Ok((num, size)),
        _ => Err(ExportErrorKind::BatchNumber {
            batch_num,
            batch_size,
        }),
    }
}

fn validate_keys(
    list: KeyList,
    keys: Vec<proto::TemporaryExposureKey>,
) -> Result<Vec<DiagnosisKey>, ExportErrorKind> {
    let mut first_seen: HashMap<Tek, usize> = HashMap::with_capacity(keys.len());
    let mut validated = Vec::with_capacity(keys.len());
    for (index, key) in keys.into_iter().enumerate() {
        let key = validate_key(list, index, key)?;
        if let Some(&first) = first_seen.get(&key.tek) {
            return Err(ExportErrorKind::DuplicateKey {
                list,
                first,
                second: index,
            });
        }
        first_seen.insert(key.tek, index);
        validated.push(key);
    }
    Ok(validated)
}

fn validate_key(
    list: KeyList,
    index: usize,
    key: proto::TemporaryExposureKey,
) -> Result<DiagnosisKey, ExportErrorKind> {
    let key_data = key
        .key_data
        .ok_or(ExportErrorKind::MissingKeyData { list, index })?;
    let tek = Tek::from_slice(&key_data).ok_or(ExportErrorKind::KeyDataLength {
        list,
        index,
        len: key_data.len(),
    })?;
    let start = key
        .rolling_start_interval_number
        .ok_or(ExportErrorKind::MissingRollingStart { list, index })?;
    let rolling_start =
        u32::try_from(start)
            .map(Enin)
            .map_err(|_| ExportErrorKind::NegativeRollingStart {
                list,
                index,
                value: start,
            })?;
    let rolling_period = match key.rolling_period {
        None => RollingPeriod::default(),
        Some(period) => RollingPeriod::new(i64::from(period)).map_err(|source| {
            ExportErrorKind::RollingPeriod {
                list,
                index,
                source,
            }
        })?,
    };
    Ok(DiagnosisKey {
        tek,
        transmission_risk_level: key.transmission_risk_level,
        rolling_start,
        rolling_period,
        report_type: key.report_type.map(ReportType::from_i32),
        days_since_onset_of_symptoms: key.days_since_onset_of_symptoms,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Absent batch fields mean a whole batch; present ones must be a real position.
    #[test]
    fn batch_position_rules() {
        assert_eq!(batch_position(None, None).ok(), Some((1, 1)));
        assert_eq!(batch_position(Some(2), Some(3)).ok(), Some((2, 3)));
        assert_eq!(batch_position(None, Some(5)).ok(), Some((1, 5)));
        for (num, size) in [
            (Some(3), None),
            (Some(0), Some(1)),
            (Some(2), Some(1)),
            (Some(-1), None),
        ] {
            assert!(
                matches!(
                    batch_position(num, size),
                    Err(ExportErrorKind::BatchNumber { .. })
                ),
                "{num:?} of {size:?}"
            );
        }
    }

    /// Input is sorted by its first bytes: zip magic, the header (or a cut-off or altered one),
    /// or nothing known.
    #[test]
    fn container_detection() {
        let limits = ReadLimits::default();
        assert!(matches!(read(b"", &limits), Err(ExportErrorKind::Empty)));
        assert!(matches!(
            read(b"PK\x03\x04junk", &limits),
            Err(ExportErrorKind::BadZip(_))
        ));
        assert!(matches!(
            read(b"EK Ex", &limits),
            Ok((Container::BareExportBin, _, None))
        ));
        assert!(matches!(
            read(b"\x89PNG\r\n", &limits),
            Err(ExportErrorKind::NotAnExport { found }) if found == "\\x89PNG\\r\\n"
        ));
    }

    /// The key cap applies before decoding, to keys and revised keys together.
    #[test]
    fn key_cap_counts_both_lists() {
        let limits = ReadLimits {
            max_keys: 3,
            ..ReadLimits::default()
        };
        let mut bin = EXPORT_BIN_HEADER.to_vec();
        bin.extend_from_slice(&[0x3a, 0, 0x3a, 0, 0x42, 0, 0x42, 0]);
        assert!(matches!(
            parse_export_bin(&bin, &limits),
            Err(ExportErrorKind::TooManyKeys { count: 4, limit: 3 })
        ));
    }
}
