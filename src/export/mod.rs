//! Diagnosis-key export files: the `export.zip` a health authority's key server publishes, with
//! `export.bin` (a 16-byte header and a `TemporaryExposureKeyExport` protobuf) and `export.sig`
//! (a `TEKSignatureList` of ECDSA P-256 signatures over the whole `export.bin`).
//!
//! Owns the validated domain values ([`ExportContents`], [`DiagnosisKey`], [`ReportType`],
//! [`SignatureInfo`]) and, one file per step:
//! - [`proto`]: the wire structs (hand-written prost messages, no `protoc`);
//! - [`reader`]: zip or bare `export.bin` bytes → [`ExportArchive`], with size limits and validation;
//! - [`signature`]: verification keys and checking `export.sig` → [`SignatureCheck`];
//! - [`writer`]: [`ExportContents`] → `export.bin`, signed `export.zip`;
//! - [`error`]: what can go wrong, each variant's doc comment being its message.
//!
//! Pure: no filesystem or network I/O, no clock. Functions take bytes and a display name (usually
//! the path, used only in error messages) and return values. Where files come from, which keys to
//! trust, and what to do with the keys (storing, matching) is left to the callers (`authority`).
//!
//! Absent header fields read as: timestamps 0, region "", batch 1 of 1 (a file that does not say
//! it is part of a larger batch is a whole batch, which is what every known server writes).

pub mod error;
pub mod proto;
pub mod reader;
pub mod signature;
pub mod writer;

use crate::crypto::{Enin, RollingPeriod, Tek};
use serde::Serialize;
use std::borrow::Cow;
use std::fmt;

pub use error::{ExportError, ExportErrorKind, KeyError};
pub use reader::{Container, ExportArchive, ReadLimits, read_export};
pub use signature::{SignatureCheck, SignatureStatus, VerificationKey, verify, verify_required};
pub use writer::{ExportSigner, encode_export_bin, write_export_zip};

/// The 16 bytes every `export.bin` starts with: "EK Export v1" padded with 4 spaces.
pub const EXPORT_BIN_HEADER: &[u8; 16] = b"EK Export v1    ";

/// Object identifier of ECDSA with SHA-256, the only signature algorithm of the export format.
pub const ECDSA_P256_SHA256_OID: &str = "1.2.840.10045.4.3.2";

/// The validated content of one `export.bin`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ExportContents {
    /// Start of the time range the keys were published in, Unix seconds (0 when absent).
    pub start_timestamp: u64,
    /// End of that time range, Unix seconds (0 when absent).
    pub end_timestamp: u64,
    /// Region the keys are for, e.g. an ISO 3166 code or an MCC ("" when absent).
    pub region: String,
    /// Position of this file in its batch, 1-based (1 when absent).
    pub batch_num: u32,
    /// Number of files in the batch (1 when absent); `1 <= batch_num <= batch_size` holds.
    pub batch_size: u32,
    /// The signing keys the server says it signed this file with.
    pub signature_infos: Vec<SignatureInfo>,
    /// Keys of confirmed (or self-reported) cases; no two share key data.
    pub keys: Vec<DiagnosisKey>,
    /// Keys published earlier whose report type or onset changed; no two share key data.
    pub revised_keys: Vec<DiagnosisKey>,
}

impl Default for ExportContents {
    /// An empty, whole (1 of 1) batch.
    fn default() -> Self {
        Self {
            start_timestamp: 0,
            end_timestamp: 0,
            region: String::new(),
            batch_num: 1,
            batch_size: 1,
            signature_infos: Vec::new(),
            keys: Vec::new(),
            revised_keys: Vec::new(),
        }
    }
}

/// One published Temporary Exposure Key with what the server says about it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DiagnosisKey {
    /// The key itself.
    pub tek: Tek,
    /// Transmission risk level as the server set it (meaning is server-defined, usually 0..=8).
    pub transmission_risk_level: Option<i32>,
    /// First interval the key was used in.
    pub rolling_start: Enin,
    /// How many intervals the key was used for (144 when the file does not say).
    pub rolling_period: RollingPeriod,
    /// How the case was diagnosed, when the server says.
    pub report_type: Option<ReportType>,
    /// Days from symptom onset to the key's day (negative: before onset), when known.
    pub days_since_onset_of_symptoms: Option<i32>,
}

/// How a case was diagnosed (`TemporaryExposureKey.ReportType`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ReportType {
    /// 0: not set by the server.
    Unknown,
    /// 1: confirmed by a test.
    ConfirmedTest,
    /// 2: confirmed by a clinician without a test.
    ConfirmedClinicalDiagnosis,
    /// 3: reported by the person, unconfirmed.
    SelfReport,
    /// 4: reserved by the specification, never used by phones.
    Recursive,
    /// 5: a previous diagnosis was withdrawn; the key must no longer count.
    Revoked,
    /// A value this version does not know; kept so that nothing is silently rewritten.
    Unrecognized(i32),
}

impl ReportType {
    /// The report type with wire value `value`.
    pub fn from_i32(value: i32) -> Self {
        match value {
            0 => Self::Unknown,
            1 => Self::ConfirmedTest,
            2 => Self::ConfirmedClinicalDiagnosis,
            3 => Self::SelfReport,
            4 => Self::Recursive,
            5 => Self::Revoked,
            other => Self::Unrecognized(other),
        }
    }

    /// The wire value.
    pub fn to_i32(self) -> i32 {
        match self {
            Self::Unknown => 0,
            Self::ConfirmedTest => 1,
            Self::ConfirmedClinicalDiagnosis => 2,
            Self::SelfReport => 3,
            Self::Recursive => 4,
            Self::Revoked => 5,
            Self::Unrecognized(value) => value,
        }
    }

    /// The name in the `.proto` file, e.g. "CONFIRMED_TEST"; "UNRECOGNIZED_7" for unknown values.
    pub fn as_str(self) -> Cow<'static, str> {
        Cow::Borrowed(match self {
            Self::Unknown => "UNKNOWN",
            Self::ConfirmedTest => "CONFIRMED_TEST",
            Self::ConfirmedClinicalDiagnosis => "CONFIRMED_CLINICAL_DIAGNOSIS",
            Self::SelfReport => "SELF_REPORT",
            Self::Recursive => "RECURSIVE",
            Self::Revoked => "REVOKED",
            Self::Unrecognized(value) => return Cow::Owned(format!("UNRECOGNIZED_{value}")),
        })
    }
}

impl fmt::Display for ReportType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.as_str())
    }
}

impl Serialize for ReportType {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&self.as_str())
    }
}

/// Which key signed a file, as the file says (`SignatureInfo`, legacy fields 1 and 2 dropped).
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash, Serialize)]
pub struct SignatureInfo {
    /// Version of the verification key, e.g. "v1".
    pub verification_key_version: Option<String>,
    /// Identifier of the verification key, often the country's MCC, e.g. "310".
    pub verification_key_id: Option<String>,
    /// Signature algorithm OID; [`ECDSA_P256_SHA256_OID`] is the only one defined.
    pub signature_algorithm: Option<String>,
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every report type survives the trip through its wire value, unknown values included.
    #[test]
    fn report_type_wire_values_round_trip() {
        for value in -2..10 {
            assert_eq!(ReportType::from_i32(value).to_i32(), value);
        }
        assert_eq!(
            ReportType::from_i32(2),
            ReportType::ConfirmedClinicalDiagnosis
        );
        assert_eq!(ReportType::from_i32(9), ReportType::Unrecognized(9));
    }

    /// Report types print as their `.proto` names.
    #[test]
    fn report_type_names() {
        assert_eq!(ReportType::ConfirmedTest.as_str(), "CONFIRMED_TEST");
        assert_eq!(ReportType::Revoked.to_string(), "REVOKED");
        assert_eq!(ReportType::Unrecognized(-3).as_str(), "UNRECOGNIZED_-3");
    }

    /// The default contents are a whole, empty batch: valid as written.
    #[test]
    fn default_contents_are_one_of_one() {
        let contents = ExportContents::default();
        assert_eq!((contents.batch_num, contents.batch_size), (1, 1));
        assert!(contents.keys.is_empty());
    }
}
