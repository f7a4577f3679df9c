//! Checking `export.sig`: verification keys (as health authorities publish them) and the rules
//! that turn an archive plus a set of trusted keys into a [`SignatureCheck`].
//!
//! The rules, in order:
//! 1. no `export.sig` → [`SignatureStatus::Absent`];
//! 2. `export.sig` does not decode, holds no signature, or absurdly many → `Invalid`;
//! 3. a configured key *applies* to a signature when the key has no id, or its id equals the
//!    signature's `verification_key_id` (and, if both carry a version, the versions are equal);
//!    signatures no configured key applies to are meant for someone else and are ignored;
//! 4. no signature has an applicable key → `Unverified` (we cannot tell either way);
//! 5. an applicable signature that is well-formed (algorithm, if given, is ECDSA P-256 SHA-256;
//!    its batch_num/batch_size, if given, equal `export.bin`'s; DER parses) and verifies over the
//!    whole `export.bin` with an applicable key → `Verified`, reporting that key's id/version;
//! 6. otherwise → `Invalid`, with every applicable signature's problem in the reason.
//!
//! Which keys to trust, and what to do with an unverified file, is policy left to the caller
//! (see [`verify_required`] for the strict policy). Signing is left to `writer`.

use super::ECDSA_P256_SHA256_OID;
use super::error::{ExportError, ExportErrorKind, KeyError};
use super::proto::{self, count_length_delimited};
use super::reader::{Container, ExportArchive};
use base64::Engine;
use p256::ecdsa::signature::hazmat::PrehashVerifier;
use p256::ecdsa::{Signature, VerifyingKey};
use p256::elliptic_curve::ALGORITHM_OID as EC_PUBLIC_KEY_OID;
use p256::pkcs8::der::pem;
use p256::pkcs8::spki::EncodePublicKey;
use p256::pkcs8::{AlgorithmIdentifierRef, AssociatedOid, LineEnding, SubjectPublicKeyInfoRef};
use prost::Message;
use serde::Serialize;
use sha2::{Digest, Sha256};
use std::fmt;

/// Signatures an `export.sig` may hold. Real files hold one per signing key; the cap keeps a
/// hostile file of empty entries from costing memory far beyond its size.
pub const MAX_SIGNATURES: usize = 100;

/// A public key trusted to sign exports, with the id and version the key server labels its
/// signatures with.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct VerificationKey {
    /// The `verification_key_id` this key signs as; `None` applies it to every signature.
    pub id: Option<String>,
    /// The `verification_key_version`; `None` matches any version.
    pub version: Option<String>,
    key: VerifyingKey,
}

impl VerificationKey {
    /// Parses a P-256 public key given as a PEM "PUBLIC KEY" (SubjectPublicKeyInfo), as raw DER
    /// SubjectPublicKeyInfo, or as base64 of that DER (the form health authorities publish;
    /// whitespace and line breaks are tolerated). The result has no id and no version.
    pub fn parse(text_or_der: &[u8]) -> Result<Self, KeyError> {
        // DER is tried on the untrimmed bytes: its last bytes may well be 0x20 or 0x0a. A DER
        // SEQUENCE starts with 0x30 ('0'), which can start neither PEM nor base64 of DER.
        if text_or_der.first() == Some(&0x30) {
            return Self::from_spki_der(text_or_der);
        }
        let text = text_or_der.trim_ascii();
        if text.is_empty() {
            return Err(KeyError::Empty);
        }
        if text.starts_with(b"-----BEGIN") {
            let (label, der) = pem::decode_vec(text).map_err(KeyError::Pem)?;
            if label != "PUBLIC KEY" {
                return Err(KeyError::PemLabel {
                    found: label.to_owned(),
                    expected: "\"PUBLIC KEY\"",
                });
            }
            return Self::from_spki_der(&der);
        }
        let compact: Vec<u8> = text
            .iter()
            .copied()
            .filter(|byte| !byte.is_ascii_whitespace())
            .collect();
        let der = base64::engine::general_purpose::STANDARD
            .decode(compact)
            .map_err(KeyError::Base64)?;
        Self::from_spki_der(&der)
    }

    fn from_spki_der(der: &[u8]) -> Result<Self, KeyError> {
        let spki = SubjectPublicKeyInfoRef::try_from(der).map_err(KeyError::Spki)?;
        check_p256(&spki.algorithm)?;
        let key = VerifyingKey::try_from(spki).map_err(|_| KeyError::BadPoint)?;
        Ok(Self::from_verifying_key(key))
    }

    /// Wraps a key, without id or version.
    pub fn from_verifying_key(key: VerifyingKey) -> Self {
        Self {
            id: None,
            version: None,
            key,
        }
    }

    /// The same key, applying only to signatures labelled `id` (and `version`, when given).
    pub fn with_id(self, id: Option<String>, version: Option<String>) -> Self {
        Self {
            id,
            version,
            ..self
        }
    }

    /// The P-256 public key.
    pub fn verifying_key(&self) -> &VerifyingKey {
        &self.key
    }

    /// DER SubjectPublicKeyInfo.
    pub fn public_key_der(&self) -> Vec<u8> {
        self.key
            .to_public_key_der()
            // Encoding a valid P-256 point into a fixed ASN.1 structure has no failure case.
            .expect("a P-256 public key always encodes as SubjectPublicKeyInfo")
            .into_vec()
    }

    /// PEM "PUBLIC KEY", as [`parse`](Self::parse) reads it.
    pub fn public_key_pem(&self) -> String {
        pem::encode_string("PUBLIC KEY", LineEnding::LF, &self.public_key_der())
            // The label is valid and the DER is ~91 bytes: nothing to fail on.
            .expect("PEM encoding of a short document with a valid label")
    }

    /// Base64 of the DER SubjectPublicKeyInfo, the form key servers publish.
    pub fn public_key_base64(&self) -> String {
        base64::engine::general_purpose::STANDARD.encode(self.public_key_der())
    }

    /// Whether this key is meant to check a signature labelled `info` (module rule 3).
    fn applies_to(&self, info: Option<&proto::SignatureInfo>) -> bool {
        let Some(id) = &self.id else {
            return true;
        };
        let Some(info) = info else {
            return false;
        };
        info.verification_key_id.as_ref() == Some(id)
            && match (&self.version, &info.verification_key_version) {
                (Some(ours), Some(theirs)) => ours == theirs,
                _ => true,
            }
    }

    fn describe(&self) -> String {
        match (&self.id, &self.version) {
            (None, _) => "key without id".to_owned(),
            (Some(id), None) => format!("key {id:?}"),
            (Some(id), Some(version)) => format!("key {id:?} {version:?}"),
        }
    }
}

/// Accepts an algorithm identifier only if it names an EC key on P-256.
pub(crate) fn check_p256(algorithm: &AlgorithmIdentifierRef<'_>) -> Result<(), KeyError> {
    if algorithm.oid != EC_PUBLIC_KEY_OID {
        return Err(KeyError::NotEc {
            oid: algorithm.oid.to_string(),
        });
    }
    match algorithm.parameters_oid() {
        Ok(curve) if curve == p256::NistP256::OID => Ok(()),
        Ok(curve) => Err(KeyError::NotP256 {
            curve: curve.to_string(),
        }),
        Err(_) => Err(KeyError::NotP256 {
            curve: "not a named curve".to_owned(),
        }),
    }
}

/// The outcome of checking an archive's signatures.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum SignatureStatus {
    /// A signature verifies with a configured key.
    Verified,
    /// There are signatures, but no configured key is meant for them.
    Unverified,
    /// The signatures are malformed, or none verifies with the keys meant for them.
    Invalid,
    /// There is no `export.sig` at all.
    Absent,
}

impl SignatureStatus {
    /// "verified", "unverified", "invalid" or "absent".
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Verified => "verified",
            Self::Unverified => "unverified",
            Self::Invalid => "invalid",
            Self::Absent => "absent",
        }
    }
}

impl fmt::Display for SignatureStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What [`verify`] found.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct SignatureCheck {
    /// The outcome.
    pub status: SignatureStatus,
    /// Id of the key that verified (only when `Verified`).
    pub key_id: Option<String>,
    /// Version of the key that verified (only when `Verified`).
    pub key_version: Option<String>,
    /// Number of signatures in `export.sig` (0 when absent or undecodable).
    pub signatures: usize,
    /// Why the status is not `Verified`.
    pub reason: Option<String>,
}

/// Checks the archive's `export.sig` against the trusted `keys` (rules in the module doc).
pub fn verify(archive: &ExportArchive, keys: &[VerificationKey]) -> SignatureCheck {
    check(archive, keys).into_check()
}

/// Like [`verify`], for callers that accept only verified files: any other status becomes an
/// [`ExportError`] naming the archive and saying why.
pub fn verify_required(
    archive: &ExportArchive,
    keys: &[VerificationKey],
) -> Result<SignatureCheck, ExportError> {
    let kind = match check(archive, keys) {
        verified @ Outcome::Verified { .. } => return Ok(verified.into_check()),
        Outcome::Absent { reason } => ExportErrorKind::SignatureAbsent { reason },
        Outcome::Unverified { reason, .. } => ExportErrorKind::SignatureUnverified { reason },
        Outcome::Undecodable(error) => ExportErrorKind::BadSignatureFile(error),
        Outcome::Invalid { reason, .. } => ExportErrorKind::SignatureInvalid { reason },
    };
    Err(ExportError::new(archive.name.clone(), kind))
}

fn not_verified(status: SignatureStatus, signatures: usize, reason: String) -> SignatureCheck {
    SignatureCheck {
        status,
        key_id: None,
        key_version: None,
        signatures,
        reason: Some(reason),
    }
}

enum Outcome<'k> {
    Verified {
        key: &'k VerificationKey,
        signatures: usize,
    },
    Absent {
        reason: String,
    },
    Unverified {
        reason: String,
        signatures: usize,
    },
    Undecodable(prost::DecodeError),
    Invalid {
        reason: String,
        signatures: usize,
    },
}

impl Outcome<'_> {
    fn into_check(self) -> SignatureCheck {
        match self {
            Outcome::Verified { key, signatures } => SignatureCheck {
                status: SignatureStatus::Verified,
                key_id: key.id.clone(),
                key_version: key.version.clone(),
                signatures,
                reason: None,
            },
            Outcome::Absent { reason } => not_verified(SignatureStatus::Absent, 0, reason),
            Outcome::Unverified { reason, signatures } => {
                not_verified(SignatureStatus::Unverified, signatures, reason)
            }
            Outcome::Undecodable(error) => not_verified(
                SignatureStatus::Invalid,
                0,
                format!("export.sig: protobuf decode failed: {error}"),
            ),
            Outcome::Invalid { reason, signatures } => {
                not_verified(SignatureStatus::Invalid, signatures, reason)
            }
        }
    }
}

fn check<'k>(archive: &ExportArchive, keys: &'k [VerificationKey]) -> Outcome<'k> {
    let Some(export_sig) = &archive.export_sig else {
        let reason = match archive.container {
            Container::BareExportBin => "a bare export.bin carries no signature",
            Container::Zip => "the zip has no export.sig",
        };
        return Outcome::Absent {
            reason: reason.to_owned(),
        };
    };
    let [count] = count_length_delimited(export_sig, [1]);
    if count > MAX_SIGNATURES {
        return Outcome::Invalid {
            reason: format!(
                "export.sig holds {count} signatures, more than the limit of {MAX_SIGNATURES}"
            ),
            signatures: count,
        };
    }
    let list = match proto::TekSignatureList::decode(export_sig.as_slice()) {
        Ok(list) => list,
        Err(error) => return Outcome::Undecodable(error),
    };
    let signatures = list.signatures.len();
    if signatures == 0 {
        return Outcome::Invalid {
            reason: "export.sig holds no signatures".to_owned(),
            signatures,
        };
    }

    // Hashed once, not once per (signature, key) pair: export.bin can be megabytes.
    let digest = Sha256::digest(&archive.export_bin);
    let mut problems = Vec::new();
    for (index, tek_signature) in list.signatures.iter().enumerate() {
        let applicable: Vec<&VerificationKey> = keys
            .iter()
            .filter(|key| key.applies_to(tek_signature.signature_info.as_ref()))
            .collect();
        if applicable.is_empty() {
            continue;
        }
        let signature = match well_formed(tek_signature, archive) {
            Ok(signature) => signature,
            Err(problem) => {
                problems.push(format!("signatures[{index}]: {problem}"));
                continue;
            }
        };
        if let Some(key) = applicable
            .iter()
            .find(|key| key.key.verify_prehash(&digest, &signature).is_ok())
        {
            return Outcome::Verified { key, signatures };
        }
        let tried: Vec<String> = applicable.iter().map(|key| key.describe()).collect();
        problems.push(format!(
            "signatures[{index}]: does not verify with {}",
            tried.join(", ")
        ));
    }
    if problems.is_empty() {
        let reason = if keys.is_empty() {
            "no verification keys are configured".to_owned()
        } else {
            let labels: Vec<String> = list
                .signatures
                .iter()
                .map(|signature| label(signature.signature_info.as_ref()))
                .collect();
            format!(
                "no configured key applies to the signatures (signed as {})",
                labels.join(", ")
            )
        };
        return Outcome::Unverified { reason, signatures };
    }
    Outcome::Invalid {
        reason: problems.join("; "),
        signatures,
    }
}

/// The key-independent checks of one signature, and its parsed, low-S form.
fn well_formed(
    tek_signature: &proto::TekSignature,
    archive: &ExportArchive,
) -> Result<Signature, String> {
    let info = tek_signature.signature_info.as_ref();
    if let Some(algorithm) = info.and_then(|info| info.signature_algorithm.as_deref())
        && algorithm != ECDSA_P256_SHA256_OID
    {
        return Err(format!(
            "signature_algorithm {algorithm:?} is not ECDSA P-256 SHA-256 ({ECDSA_P256_SHA256_OID})"
        ));
    }
    let contents = &archive.contents;
    for (field, claimed, actual) in [
        ("batch_num", tek_signature.batch_num, contents.batch_num),
        ("batch_size", tek_signature.batch_size, contents.batch_size),
    ] {
        if let Some(claimed) = claimed
            && i64::from(claimed) != i64::from(actual)
        {
            return Err(format!(
                "{field} {claimed} disagrees with export.bin's {actual}"
            ));
        }
    }
    let der = tek_signature
        .signature
        .as_deref()
        .ok_or_else(|| "signature bytes are missing".to_owned())?;
    let signature = Signature::from_der(der).map_err(|_| {
        format!(
            "signature is not a DER ECDSA P-256 signature ({} bytes)",
            der.len()
        )
    })?;
    // ECDSA accepts both s and n - s. Some key servers (Google's among them) emit high-S
    // signatures; normalising makes acceptance independent of the verifier's low-S policy.
    Ok(signature.normalize_s())
}

fn label(info: Option<&proto::SignatureInfo>) -> String {
    let id = info.and_then(|info| info.verification_key_id.as_deref());
    let version = info.and_then(|info| info.verification_key_version.as_deref());
    match (id, version) {
        (None, _) => "no key id".to_owned(),
        (Some(id), None) => format!("key {id:?}"),
        (Some(id), Some(version)) => format!("key {id:?} {version:?}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn info(id: Option<&str>, version: Option<&str>) -> proto::SignatureInfo {
        proto::SignatureInfo {
            verification_key_id: id.map(str::to_owned),
            verification_key_version: version.map(str::to_owned),
            signature_algorithm: None,
        }
    }

    fn key() -> VerificationKey {
        VerificationKey::from_verifying_key(
            *p256::ecdsa::SigningKey::from_slice(&[7; 32])
                .expect("7..7 is a valid P-256 scalar")
                .verifying_key(),
        )
    }

    /// A key without id applies to everything; a key with an id only to signatures with that
    /// id, and a version only narrows the match when both sides have one.
    #[test]
    fn key_matching_rules() {
        let any = key();
        assert!(any.applies_to(None));
        assert!(any.applies_to(Some(&info(Some("310"), Some("v1")))));

        let by_id = key().with_id(Some("310".into()), None);
        assert!(by_id.applies_to(Some(&info(Some("310"), Some("v7")))));
        assert!(!by_id.applies_to(Some(&info(Some("311"), None))));
        assert!(!by_id.applies_to(Some(&info(None, None))));
        assert!(!by_id.applies_to(None));

        let by_version = key().with_id(Some("310".into()), Some("v1".into()));
        assert!(by_version.applies_to(Some(&info(Some("310"), Some("v1")))));
        assert!(by_version.applies_to(Some(&info(Some("310"), None))));
        assert!(!by_version.applies_to(Some(&info(Some("310"), Some("v2")))));
    }

    /// Each way of writing a public key reads back to the same key.
    #[test]
    fn public_key_encodings_round_trip() {
        let key = key();
        assert_eq!(
            VerificationKey::parse(key.public_key_pem().as_bytes()).ok(),
            Some(key.clone())
        );
        assert_eq!(
            VerificationKey::parse(&key.public_key_der()).ok(),
            Some(key.clone())
        );
        assert_eq!(
            VerificationKey::parse(key.public_key_base64().as_bytes()).ok(),
            Some(key)
        );
    }

    /// Statuses print as the lowercase words the CLI and JSON use.
    #[test]
    fn status_words() {
        assert_eq!(SignatureStatus::Unverified.as_str(), "unverified");
        assert_eq!(
            serde_json::to_string(&SignatureStatus::Absent).expect("serialises"),
            "\"absent\""
        );
    }
}
