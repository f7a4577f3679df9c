//! What can go wrong with an export file or a signing key, one variant per problem; each
//! variant's doc comment is its message.
//!
//! [`ExportError`] carries the display name of the file (given by the caller, usually its path)
//! so that every message reads "which file: which part: what is wrong", e.g.
//! `export.zip: keys[17]: key_data is 15 bytes, expected 16`. Lower-level causes (zip, protobuf,
//! DER) stay reachable through `source()` rather than being pasted into the message. Detecting
//! the problems is left to `reader`, `signature` and `writer`.

use crate::crypto::RollingPeriodError;
use std::error::Error;
use std::fmt;

/// A problem with one export file, named by the caller's display name.
#[derive(Debug)]
pub struct ExportError {
    /// The file, as the caller named it (usually its path).
    pub name: String,
    /// What is wrong with it.
    pub kind: ExportErrorKind,
}

impl ExportError {
    /// Attaches the file's display name to a problem.
    pub fn new(name: impl Into<String>, kind: ExportErrorKind) -> Self {
        Self {
            name: name.into(),
            kind,
        }
    }
}

impl fmt::Display for ExportError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.name, self.kind)
    }
}

// Written by hand rather than derived: the kind is already part of the message, so making it the
// `source` would print it twice in an error chain. The chain continues with the kind's own cause.
impl Error for ExportError {
    fn source(&self) -> Option<&(dyn Error + 'static)> {
        self.kind.source()
    }
}

/// Which list of keys in `export.bin` a problem is in: "keys" or "revised_keys".
pub type KeyList = &'static str;

/// What is wrong with an export file.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ExportErrorKind {
    /// file is empty
    #[error("file is empty")]
    Empty,
    /// not an export file: starts with "{found}", expected a zip or the header "EK Export v1    "
    #[error(
        "not an export file: starts with \"{found}\", expected a zip or the header \"EK Export v1    \""
    )]
    NotAnExport {
        /// The first bytes of the file, escaped for display.
        found: String,
    },
    /// zip archive is unreadable
    #[error("zip archive is unreadable")]
    BadZip(#[source] zip::result::ZipError),
    /// {entry}: reading the zip entry failed
    #[error("{entry}: reading the zip entry failed")]
    BadZipEntry {
        /// Entry name.
        entry: &'static str,
        /// Unsupported compression or encryption, decompression or checksum failure.
        #[source]
        source: zip::result::ZipError,
    },
    /// zip has no export.bin entry
    #[error("zip has no export.bin entry")]
    MissingExportBin,
    /// zip holds two entries with the same name
    #[error("zip holds two entries with the same name")]
    DuplicateEntries,
    /// {entry}: larger than the limit of {limit} bytes
    #[error("{entry}: larger than the limit of {limit} bytes")]
    EntryTooLarge {
        /// Entry name.
        entry: &'static str,
        /// The limit that was exceeded ([`ReadLimits::max_entry_bytes`](super::ReadLimits)).
        limit: u64,
    },
    /// zip has {count} entries, more than the limit of {limit}
    #[error("zip has {count} entries, more than the limit of {limit}")]
    TooManyEntries {
        /// Entries in the zip's central directory.
        count: usize,
        /// The limit.
        limit: usize,
    },
    /// export.bin: header is "{found}", expected "EK Export v1    "
    #[error("export.bin: header is \"{found}\", expected \"EK Export v1    \"")]
    BadHeader {
        /// The first 16 bytes, escaped for display.
        found: String,
    },
    /// export.bin: ends after {len} bytes, inside the 16-byte header
    #[error("export.bin: ends after {len} bytes, inside the 16-byte header")]
    Truncated {
        /// Length of what there is.
        len: usize,
    },
    /// export.bin: protobuf decode failed
    #[error("export.bin: protobuf decode failed")]
    Protobuf(#[source] prost::DecodeError),
    /// export.bin: holds {count} keys, more than the limit of {limit}
    #[error("export.bin: holds {count} keys, more than the limit of {limit}")]
    TooManyKeys {
        /// Keys and revised keys counted (possibly only up to a malformed part).
        count: usize,
        /// The limit ([`ReadLimits::max_keys`](super::ReadLimits)).
        limit: usize,
    },
    /// export.bin: holds {count} signature_infos, more than the limit of {limit}
    #[error("export.bin: holds {count} signature_infos, more than the limit of {limit}")]
    TooManySignatureInfos {
        /// Signature infos counted.
        count: usize,
        /// The limit.
        limit: usize,
    },
    /// {list}[{index}]: key_data is missing
    #[error("{list}[{index}]: key_data is missing")]
    MissingKeyData {
        /// "keys" or "revised_keys".
        list: KeyList,
        /// Position in the list.
        index: usize,
    },
    /// {list}[{index}]: key_data is {len} bytes, expected 16
    #[error("{list}[{index}]: key_data is {len} bytes, expected 16")]
    KeyDataLength {
        /// "keys" or "revised_keys".
        list: KeyList,
        /// Position in the list.
        index: usize,
        /// Length found.
        len: usize,
    },
    /// {list}[{index}]: rolling_start_interval_number is missing
    #[error("{list}[{index}]: rolling_start_interval_number is missing")]
    MissingRollingStart {
        /// "keys" or "revised_keys".
        list: KeyList,
        /// Position in the list.
        index: usize,
    },
    /// {list}[{index}]: rolling_start_interval_number {value} is negative
    #[error("{list}[{index}]: rolling_start_interval_number {value} is negative")]
    NegativeRollingStart {
        /// "keys" or "revised_keys".
        list: KeyList,
        /// Position in the list.
        index: usize,
        /// The value found.
        value: i32,
    },
    /// {list}[{index}]: invalid rolling_period
    #[error("{list}[{index}]: invalid rolling_period")]
    RollingPeriod {
        /// "keys" or "revised_keys".
        list: KeyList,
        /// Position in the list.
        index: usize,
        /// The value and the allowed range.
        #[source]
        source: RollingPeriodError,
    },
    /// {list}[{second}]: key_data repeats {list}[{first}]
    #[error("{list}[{second}]: key_data repeats {list}[{first}]")]
    DuplicateKey {
        /// "keys" or "revised_keys".
        list: KeyList,
        /// Position of the first occurrence.
        first: usize,
        /// Position of the repeat.
        second: usize,
    },
    /// batch_num {batch_num} of batch_size {batch_size} is impossible (need 1 <= batch_num <= batch_size)
    #[error(
        "batch_num {batch_num} of batch_size {batch_size} is impossible (need 1 <= batch_num <= batch_size)"
    )]
    BatchNumber {
        /// batch_num as read (1 when absent).
        batch_num: i32,
        /// batch_size as read (1 when absent).
        batch_size: i32,
    },
    /// export.sig: protobuf decode failed
    #[error("export.sig: protobuf decode failed")]
    BadSignatureFile(#[source] prost::DecodeError),
    /// signature required but absent: {reason}
    #[error("signature required but absent: {reason}")]
    SignatureAbsent {
        /// Why there is no signature to check.
        reason: String,
    },
    /// signature required but unverified: {reason}
    #[error("signature required but unverified: {reason}")]
    SignatureUnverified {
        /// Why no configured key could check it.
        reason: String,
    },
    /// signature invalid: {reason}
    #[error("signature invalid: {reason}")]
    SignatureInvalid {
        /// Why the signatures do not verify.
        reason: String,
    },
    /// writing the zip failed
    #[error("writing the zip failed")]
    ZipWrite(#[source] zip::result::ZipError),
}

/// A verification or signing key that cannot be used.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum KeyError {
    /// key text is empty
    #[error("key text is empty")]
    Empty,
    /// PEM key is not UTF-8 text
    #[error("PEM key is not UTF-8 text")]
    NotUtf8,
    /// PEM document is malformed
    #[error("PEM document is malformed")]
    Pem(#[source] p256::pkcs8::der::pem::Error),
    /// PEM label is "{found}", expected {expected}
    #[error("PEM label is \"{found}\", expected {expected}")]
    PemLabel {
        /// The label in the `-----BEGIN ...-----` line.
        found: String,
        /// The labels accepted here.
        expected: &'static str,
    },
    /// key is neither PEM nor DER, and not valid base64
    #[error("key is neither PEM nor DER, and not valid base64")]
    Base64(#[source] base64::DecodeError),
    /// public key is not a valid DER SubjectPublicKeyInfo
    #[error("public key is not a valid DER SubjectPublicKeyInfo")]
    Spki(#[source] p256::pkcs8::spki::Error),
    /// private key is not a valid PKCS#8 PrivateKeyInfo
    #[error("private key is not a valid PKCS#8 PrivateKeyInfo")]
    Pkcs8(#[source] p256::pkcs8::Error),
    /// private key is not a valid SEC1 EC private key
    #[error("private key is not a valid SEC1 EC private key")]
    Sec1(#[source] p256::elliptic_curve::DecodeError),
    /// key algorithm {oid} is not an elliptic-curve key (1.2.840.10045.2.1)
    #[error("key algorithm {oid} is not an elliptic-curve key (1.2.840.10045.2.1)")]
    NotEc {
        /// The algorithm OID found.
        oid: String,
    },
    /// key curve is {curve}, not P-256 (1.2.840.10045.3.1.7)
    #[error("key curve is {curve}, not P-256 (1.2.840.10045.3.1.7)")]
    NotP256 {
        /// The curve OID found, or a note that none is named.
        curve: String,
    },
    /// public key is not a point on P-256
    #[error("public key is not a point on P-256")]
    BadPoint,
}

/// Escapes up to the first 16 bytes of `bytes` for a message: printable ASCII as is, the rest as
/// `\xNN`, so that binary garbage cannot mangle a terminal or a log line.
pub(crate) fn escape_prefix(bytes: &[u8]) -> String {
    bytes
        .iter()
        .take(16)
        .flat_map(|&byte| std::ascii::escape_default(byte))
        .map(char::from)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The message is "name: problem", and the chain continues with the problem's cause, not
    /// with the problem again.
    #[test]
    fn message_names_file_and_chain_skips_the_kind() {
        let err = ExportError::new(
            "export.zip",
            ExportErrorKind::KeyDataLength {
                list: "keys",
                index: 17,
                len: 15,
            },
        );
        assert_eq!(
            err.to_string(),
            "export.zip: keys[17]: key_data is 15 bytes, expected 16"
        );
        assert!(err.source().is_none());

        let err = ExportError::new(
            "a.zip",
            ExportErrorKind::RollingPeriod {
                list: "revised_keys",
                index: 2,
                source: RollingPeriodError(145),
            },
        );
        assert_eq!(
            err.to_string(),
            "a.zip: revised_keys[2]: invalid rolling_period"
        );
        let cause = err.source().expect("the rolling period error is the cause");
        assert_eq!(cause.to_string(), "rolling period 145 is outside 1..=144");
    }

    /// Escaping keeps text readable and neutralises control bytes.
    #[test]
    fn escaping_binary_prefixes() {
        assert_eq!(escape_prefix(b"EK Export v2    tail"), "EK Export v2    ");
        assert_eq!(escape_prefix(b"\x1b[2J\x00"), "\\x1b[2J\\x00");
    }
}
