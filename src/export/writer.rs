//! Writing export files: [`ExportContents`] → `export.bin` bytes, and a signed `export.zip` with
//! `export.bin` and `export.sig`, as a key server publishes them; plus the signing key.
//!
//! Used by the simulator, tests and operators who run their own key server. Output is
//! deterministic for a given key and contents (RFC 6979 signatures, fixed zip timestamps), so
//! published files can be reproduced and compared. Reading back is left to `reader`, checking
//! signatures to `signature`, and storing the private key to the caller.

use super::error::{ExportError, ExportErrorKind, KeyError};
use super::proto;
use super::signature::{VerificationKey, check_p256};
use super::{EXPORT_BIN_HEADER, ExportContents, SignatureInfo};
use p256::SecretKey;
use p256::ecdsa::signature::Signer;
use p256::ecdsa::{Signature, SigningKey};
use p256::elliptic_curve::Generate;
use p256::elliptic_curve::zeroize::Zeroizing;
use p256::pkcs8::der::pem;
use p256::pkcs8::{EncodePrivateKey, LineEnding, PrivateKeyInfoRef};
use prost::Message;
use std::fmt;
use std::io::{Cursor, Write};
use zip::write::{SimpleFileOptions, ZipWriter};
use zip::{CompressionMethod, DateTime};

/// A P-256 private key that signs exports, and the [`SignatureInfo`] its signatures carry.
#[derive(Clone)]
pub struct ExportSigner {
    key: SigningKey,
    /// Written into every `TEKSignature` this signer makes (key id, version, algorithm).
    pub info: SignatureInfo,
}

impl fmt::Debug for ExportSigner {
    // The private key never appears in Debug output (privacy rule 5: no secrets in logs).
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ExportSigner")
            .field("key", &"<redacted>")
            .field("info", &self.info)
            .finish()
    }
}

impl ExportSigner {
    /// Reads a P-256 private key from PEM: PKCS#8 ("PRIVATE KEY", what `openssl genpkey` and
    /// [`private_key_pem`](Self::private_key_pem) write) or SEC1 ("EC PRIVATE KEY", what
    /// `openssl ecparam -genkey` writes).
    pub fn from_pem(pem: &str, info: SignatureInfo) -> Result<Self, KeyError> {
        let text = pem.trim();
        if text.is_empty() {
            return Err(KeyError::Empty);
        }
        let (label, der) = pem::decode_vec(text.as_bytes()).map_err(KeyError::Pem)?;
        // The DER holds the secret scalar: wipe it when done.
        let der = Zeroizing::new(der);
        let key = match label {
            "PRIVATE KEY" => {
                let key_info =
                    PrivateKeyInfoRef::try_from(der.as_slice()).map_err(KeyError::Pkcs8)?;
                check_p256(&key_info.algorithm)?;
                SigningKey::try_from(key_info).map_err(KeyError::Pkcs8)?
            }
            "EC PRIVATE KEY" => SecretKey::from_sec1_der(&der)
                .map(SigningKey::from)
                .map_err(KeyError::Sec1)?,
            other => {
                return Err(KeyError::PemLabel {
                    found: other.to_owned(),
                    expected: "\"PRIVATE KEY\" (PKCS#8) or \"EC PRIVATE KEY\" (SEC1)",
                });
            }
        };
        Ok(Self { key, info })
    }

    /// A new random key from the operating system's generator.
    ///
    /// # Panics
    /// If the operating system cannot provide randomness, which leaves no safe way to make a key.
    pub fn generate(info: SignatureInfo) -> Self {
        Self {
            key: SigningKey::generate(),
            info,
        }
    }

    /// The matching public key, labelled with this signer's key id and version so that it
    /// applies exactly to the signatures this signer makes.
    pub fn verification_key(&self) -> VerificationKey {
        VerificationKey::from_verifying_key(*self.key.verifying_key()).with_id(
            self.info.verification_key_id.clone(),
            self.info.verification_key_version.clone(),
        )
    }

    /// The private key as PKCS#8 PEM ("PRIVATE KEY"). Secret: store it like one.
    pub fn private_key_pem(&self) -> String {
        let pem = self
            .key
            .to_pkcs8_pem(LineEnding::LF)
            // A valid scalar in a fixed ASN.1 structure: encoding has no failure case.
            .expect("a P-256 private key always encodes as PKCS#8");
        pem.as_str().to_owned()
    }

    /// The public key as PEM ("PUBLIC KEY"), to hand to verifiers.
    pub fn public_key_pem(&self) -> String {
        self.verification_key().public_key_pem()
    }

    /// The `TEKSignature` of `export_bin` (header included) for a file at `batch_num` of
    /// `batch_size`.
    pub fn sign(&self, export_bin: &[u8], batch_num: u32, batch_size: u32) -> proto::TekSignature {
        let signature: Signature = self.key.sign(export_bin);
        proto::TekSignature {
            signature_info: Some((&self.info).into()),
            batch_num: Some(proto::saturating_i32(batch_num)),
            batch_size: Some(proto::saturating_i32(batch_size)),
            signature: Some(signature.to_der().as_bytes().to_vec()),
        }
    }
}

/// `export.bin`: the 16-byte header and the protobuf of `contents`. Every header field and every
/// key's rolling period is written; optional key fields only when set.
pub fn encode_export_bin(contents: &ExportContents) -> Vec<u8> {
    let message = proto::TemporaryExposureKeyExport::from(contents);
    let mut bytes = Vec::with_capacity(EXPORT_BIN_HEADER.len() + message.encoded_len());
    bytes.extend_from_slice(EXPORT_BIN_HEADER);
    message.encode_raw(&mut bytes);
    bytes
}

/// A signed `export.zip`: `export.bin` for `contents`, and `export.sig` with one signature by
/// `signer`, both deflated.
///
/// `contents.signature_infos` is written as given; key servers list their signer's info there
/// too, so callers normally include `signer.info`.
pub fn write_export_zip(
    contents: &ExportContents,
    signer: &ExportSigner,
) -> Result<Vec<u8>, ExportError> {
    let export_bin = encode_export_bin(contents);
    let signature = signer.sign(&export_bin, contents.batch_num, contents.batch_size);
    let export_sig = proto::TekSignatureList {
        signatures: vec![signature],
    }
    .encode_to_vec();
    zip_entries(&[("export.bin", &export_bin), ("export.sig", &export_sig)])
        .map_err(|source| ExportError::new("export.zip", ExportErrorKind::ZipWrite(source)))
}

fn zip_entries(entries: &[(&str, &[u8])]) -> zip::result::ZipResult<Vec<u8>> {
    let options = SimpleFileOptions::default()
        .compression_method(CompressionMethod::Deflated)
        // A fixed timestamp keeps the output reproducible (the zip format's epoch).
        .last_modified_time(DateTime::default())
        .unix_permissions(0o644);
    let mut zip = ZipWriter::new(Cursor::new(Vec::new()));
    for (name, data) in entries {
        zip.start_file(*name, options)?;
        zip.write_all(data)?;
    }
    Ok(zip.finish()?.into_inner())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crypto::{Enin, RollingPeriod, Tek};
    use crate::export::DiagnosisKey;
    use std::io::Read;
    use zip::ZipArchive;

    fn contents() -> ExportContents {
        ExportContents {
            region: "MA".into(),
            keys: vec![DiagnosisKey {
                tek: Tek::from_bytes([1; 16]),
                transmission_risk_level: None,
                rolling_start: Enin(2_650_000),
                rolling_period: RollingPeriod::DAY,
                report_type: None,
                days_since_onset_of_symptoms: None,
            }],
            ..ExportContents::default()
        }
    }

    /// export.bin is the header followed by exactly the protobuf of the contents, with the
    /// default rolling period written out and unset optional fields left out.
    #[test]
    fn export_bin_layout() {
        let bin = encode_export_bin(&contents());
        assert_eq!(&bin[..16], EXPORT_BIN_HEADER);
        let message = proto::TemporaryExposureKeyExport::decode(&bin[16..]).expect("decodes");
        let key = &message.keys[0];
        assert_eq!(key.rolling_period, Some(144));
        assert_eq!(key.report_type, None);
        assert_eq!(key.transmission_risk_level, None);
        assert_eq!((message.batch_num, message.batch_size), (Some(1), Some(1)));
    }

    /// The zip holds export.bin and export.sig, deflated, and writing twice gives the same bytes.
    #[test]
    fn zip_is_deflated_and_reproducible() {
        let signer = ExportSigner::from_pem(
            &ExportSigner::generate(SignatureInfo::default()).private_key_pem(),
            SignatureInfo::default(),
        )
        .expect("own PEM reads back");
        let zip = write_export_zip(&contents(), &signer).expect("writes");
        assert_eq!(zip, write_export_zip(&contents(), &signer).expect("writes"));
        let mut archive = ZipArchive::new(Cursor::new(&zip[..])).expect("zip");
        let names: Vec<String> = archive
            .file_names()
            .map(|name| name.expect("UTF-8 names").into_owned())
            .collect();
        assert_eq!(names, ["export.bin", "export.sig"]);
        let mut bin = Vec::new();
        let mut entry = archive.by_name("export.bin").expect("entry");
        assert_eq!(entry.compression(), CompressionMethod::Deflated);
        entry.read_to_end(&mut bin).expect("inflates");
        assert_eq!(bin, encode_export_bin(&contents()));
    }

    /// Debug output of a signer shows its label, never its key.
    #[test]
    fn signer_debug_is_redacted() {
        let signer = ExportSigner::generate(SignatureInfo::default());
        let pem = signer.private_key_pem();
        let debug = format!("{signer:?}");
        assert!(debug.contains("<redacted>"));
        let secret_line = pem.lines().nth(1).expect("PEM body");
        assert!(!debug.contains(secret_line));
    }
}
