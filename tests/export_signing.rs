//! Signing and verifying exports: what the writer produces reads back unchanged, and the
//! signature check says Verified only when a trusted key signed exactly these `export.bin` bytes.

use p256::ecdsa::signature::Signer;
use p256::ecdsa::{Signature, SigningKey};
use p256::elliptic_curve::scalar::IsHigh;
use prost::Message;
use std::io::{Cursor, Write};
use venuetrace::crypto::{Enin, RollingPeriod, Tek};
use venuetrace::export::proto::{TekSignature, TekSignatureList};
use venuetrace::export::{
    Container, DiagnosisKey, ECDSA_P256_SHA256_OID, ExportArchive, ExportContents, ExportErrorKind,
    ExportSigner, KeyError, ReadLimits, ReportType, SignatureInfo, SignatureStatus,
    VerificationKey, encode_export_bin, read_export, verify, verify_required, write_export_zip,
};
use zip::write::SimpleFileOptions;

/// A P-256 key made with `openssl ecparam -name prime256v1 -genkey` (test only), in the three
/// forms operators handle: SEC1 and PKCS#8 private keys, and the public key as PEM and base64.
const OPENSSL_SEC1_PEM: &str = "-----BEGIN EC PRIVATE KEY-----
MHcCAQEEIMniWXoJzJSV6jw2cuQteNX5hicyZSkxFyegXlmbZhw/oAoGCCqGSM49
AwEHoUQDQgAEHiMouThuJnW7GKDJAgxh2VUy3OGB1JZ4aCiAwnZKi2LW7hrcC6mj
MxaBYFy9rEjqQnPkd18ZpN5KC93XPlujCg==
-----END EC PRIVATE KEY-----
";
const OPENSSL_PKCS8_PEM: &str = "-----BEGIN PRIVATE KEY-----
MIGHAgEAMBMGByqGSM49AgEGCCqGSM49AwEHBG0wawIBAQQgyeJZegnMlJXqPDZy
5C141fmGJzJlKTEXJ6BeWZtmHD+hRANCAAQeIyi5OG4mdbsYoMkCDGHZVTLc4YHU
lnhoKIDCdkqLYtbuGtwLqaMzFoFgXL2sSOpCc+R3Xxmk3koL3dc+W6MK
-----END PRIVATE KEY-----
";
const OPENSSL_PUBLIC_PEM: &str = "-----BEGIN PUBLIC KEY-----
MFkwEwYHKoZIzj0CAQYIKoZIzj0DAQcDQgAEHiMouThuJnW7GKDJAgxh2VUy3OGB
1JZ4aCiAwnZKi2LW7hrcC6mjMxaBYFy9rEjqQnPkd18ZpN5KC93XPlujCg==
-----END PUBLIC KEY-----
";
const OPENSSL_PUBLIC_BASE64: &str = "MFkwEwYHKoZIzj0CAQYIKoZIzj0DAQcDQgAEHiMouThuJnW7GKDJAgxh2VUy3OGB1JZ4aCiAwnZKi2LW7hrcC6mjMxaBYFy9rEjqQnPkd18ZpN5KC93XPlujCg==";
/// A P-384 public key (`openssl ecparam -name secp384r1`): right format, wrong curve.
const P384_PUBLIC_PEM: &str = "-----BEGIN PUBLIC KEY-----
MHYwEAYHKoZIzj0CAQYFK4EEACIDYgAEhD5eFeiACkwXi0v2M1bp/UAysj+psrf0
6f15z1MQiqvR/l46VJoYtP69/CImpf7hM+Sv04NYa6MfeEOloJEveAH4v3m7Sq3i
UWvh2ewE9Az+GzoMBeARuJF1tgwwGMkc
-----END PUBLIC KEY-----
";

fn info(id: &str, version: &str) -> SignatureInfo {
    SignatureInfo {
        verification_key_version: Some(version.to_owned()),
        verification_key_id: Some(id.to_owned()),
        signature_algorithm: Some(ECDSA_P256_SHA256_OID.to_owned()),
    }
}

fn key(seed: u8, start: u32) -> DiagnosisKey {
    DiagnosisKey {
        tek: Tek::from_bytes([seed; 16]),
        transmission_risk_level: None,
        rolling_start: Enin(start),
        rolling_period: RollingPeriod::DAY,
        report_type: None,
        days_since_onset_of_symptoms: None,
    }
}

/// Contents using every field, every report type (and one this version does not know),
/// negative onset days, and revised keys that repeat a key of the main list.
fn full_contents(signer_info: &SignatureInfo) -> ExportContents {
    let report_types = [
        ReportType::Unknown,
        ReportType::ConfirmedTest,
        ReportType::ConfirmedClinicalDiagnosis,
        ReportType::SelfReport,
        ReportType::Recursive,
        ReportType::Revoked,
        ReportType::Unrecognized(9),
    ];
    let keys = report_types
        .iter()
        .enumerate()
        .map(|(i, &report_type)| {
            let i = u8::try_from(i).expect("few keys");
            DiagnosisKey {
                transmission_risk_level: Some(i32::from(i)),
                rolling_period: RollingPeriod::new(i64::from(i) + 1).expect("1..=7"),
                report_type: Some(report_type),
                days_since_onset_of_symptoms: Some(i32::from(i) - 5),
                ..key(i, 2_650_000 + u32::from(i) * 144)
            }
        })
        .collect();
    ExportContents {
        start_timestamp: 1_590_000_000,
        end_timestamp: 1_590_086_400,
        region: "504".into(),
        batch_num: 2,
        batch_size: 3,
        signature_infos: vec![signer_info.clone()],
        keys,
        revised_keys: vec![DiagnosisKey {
            report_type: Some(ReportType::Revoked),
            days_since_onset_of_symptoms: Some(-14),
            ..key(3, 2_650_432)
        }],
    }
}

/// A small export (5 keys), for tests that verify thousands of times.
fn small_contents(signer_info: &SignatureInfo) -> ExportContents {
    ExportContents {
        region: "MA".into(),
        signature_infos: vec![signer_info.clone()],
        keys: (0..5).map(|i| key(i + 10, 2_650_000)).collect(),
        ..ExportContents::default()
    }
}

fn read(zip: &[u8]) -> ExportArchive {
    read_export("export.zip", zip, &ReadLimits::default()).expect("valid zip reads")
}

/// Zips entries as given (stored, not deflated: these tests build many zips).
fn zip_of(entries: &[(&str, &[u8])]) -> Vec<u8> {
    let mut zip = zip::ZipWriter::new(Cursor::new(Vec::new()));
    for (name, data) in entries {
        zip.start_file(*name, SimpleFileOptions::default())
            .expect("in-memory zip entry");
        zip.write_all(data).expect("in-memory write");
    }
    zip.finish().expect("in-memory zip").into_inner()
}

fn signed(signer: &ExportSigner, contents: &ExportContents) -> ExportArchive {
    read(&write_export_zip(contents, signer).expect("writes"))
}

/// Everything written is read back identically: header, keys, revised keys, report types
/// (including unknown values) and negative onset days.
#[test]
fn writer_reader_round_trip() {
    let signer = ExportSigner::generate(info("310", "v1"));
    let contents = full_contents(&signer.info);
    let archive = signed(&signer, &contents);
    assert_eq!(archive.container, Container::Zip);
    assert_eq!(archive.contents, contents);
    assert_eq!(archive.export_bin, encode_export_bin(&contents));
    assert!(archive.export_sig.is_some());
    let unknown = archive.contents.keys.last().expect("keys");
    assert_eq!(unknown.report_type, Some(ReportType::Unrecognized(9)));
    assert_eq!(
        archive.contents.revised_keys[0].days_since_onset_of_symptoms,
        Some(-14)
    );
}

/// The signer's own public key verifies its file, and the check names that key.
#[test]
fn verified_with_the_matching_key() {
    let signer = ExportSigner::generate(info("310", "v1"));
    let archive = signed(&signer, &full_contents(&signer.info));
    let check = verify(&archive, &[signer.verification_key()]);
    assert_eq!(check.status, SignatureStatus::Verified, "{check:?}");
    assert_eq!(check.key_id.as_deref(), Some("310"));
    assert_eq!(check.key_version.as_deref(), Some("v1"));
    assert_eq!((check.signatures, check.reason), (1, None));
    assert!(verify_required(&archive, &[signer.verification_key()]).is_ok());
}

/// Without any configured key a signed file is Unverified, and strict callers get an error.
#[test]
fn unverified_without_keys() {
    let signer = ExportSigner::generate(info("310", "v1"));
    let archive = signed(&signer, &small_contents(&signer.info));
    let check = verify(&archive, &[]);
    assert_eq!(check.status, SignatureStatus::Unverified);
    assert_eq!(check.signatures, 1);
    assert!(
        check
            .reason
            .as_deref()
            .unwrap_or("")
            .contains("no verification keys")
    );

    let error = verify_required(&archive, &[]).expect_err("unverified is not enough");
    assert!(matches!(
        error.kind,
        ExportErrorKind::SignatureUnverified { .. }
    ));
    assert!(
        error
            .to_string()
            .starts_with("export.zip: signature required but unverified"),
        "{error}"
    );
}

/// A different key under the same id does not verify: Invalid.
#[test]
fn invalid_with_another_key() {
    let signer = ExportSigner::generate(info("310", "v1"));
    let impostor = ExportSigner::generate(info("310", "v1"));
    let archive = signed(&signer, &small_contents(&signer.info));
    let check = verify(&archive, &[impostor.verification_key()]);
    assert_eq!(check.status, SignatureStatus::Invalid);
    assert!(
        check
            .reason
            .as_deref()
            .unwrap_or("")
            .contains("does not verify"),
        "{check:?}"
    );
    let error = verify_required(&archive, &[impostor.verification_key()]).expect_err("invalid");
    assert!(
        matches!(error.kind, ExportErrorKind::SignatureInvalid { .. }),
        "{error}"
    );
}

/// Key ids pick which keys check which signatures; versions narrow it when both sides have one.
#[test]
fn key_id_and_version_matching() {
    let signer = ExportSigner::generate(info("310", "v1"));
    let other = ExportSigner::generate(info("310", "v1"));
    let archive = signed(&signer, &small_contents(&signer.info));
    let right = signer.verification_key();
    let labelled = |key: &VerificationKey, id: Option<&str>, version: Option<&str>| {
        key.clone()
            .with_id(id.map(str::to_owned), version.map(str::to_owned))
    };
    let status = |keys: &[VerificationKey]| verify(&archive, keys);

    // The right key under another id, or another version, is not meant for this signature.
    assert_eq!(
        status(&[labelled(&right, Some("311"), None)]).status,
        SignatureStatus::Unverified
    );
    assert_eq!(
        status(&[labelled(&right, Some("310"), Some("v2"))]).status,
        SignatureStatus::Unverified
    );
    // Without a version it matches any version; without an id it matches every signature.
    let check = status(&[labelled(&right, Some("310"), None)]);
    assert_eq!(
        (check.status, check.key_id.as_deref(), check.key_version),
        (SignatureStatus::Verified, Some("310"), None)
    );
    let check = status(&[labelled(&right, None, None)]);
    assert_eq!(
        (check.status, check.key_id),
        (SignatureStatus::Verified, None)
    );
    // Every applicable key is tried, not just the first.
    let check = status(&[other.verification_key(), right.clone()]);
    assert_eq!(check.status, SignatureStatus::Verified);
    // A key without id applies (and fails); the right key under a wrong id is not tried.
    let check = status(&[
        labelled(&other.verification_key(), None, None),
        labelled(&right, Some("311"), None),
    ]);
    assert_eq!(check.status, SignatureStatus::Invalid);
}

/// PEM, base64 (with line breaks and spaces) and DER of one public key parse to the same key,
/// which verifies the same signatures; an OpenSSL key is read in both private formats.
#[test]
fn key_formats_are_equivalent() {
    let from_pem = VerificationKey::parse(OPENSSL_PUBLIC_PEM.as_bytes()).expect("PEM");
    let spaced: String = OPENSSL_PUBLIC_BASE64
        .as_bytes()
        .chunks(20)
        .map(|chunk| std::str::from_utf8(chunk).expect("ASCII"))
        .collect::<Vec<_>>()
        .join("\n  ");
    let from_base64 = VerificationKey::parse(format!("  {spaced}\n").as_bytes()).expect("base64");
    let from_der = VerificationKey::parse(&from_pem.public_key_der()).expect("DER");
    assert_eq!(from_pem, from_base64);
    assert_eq!(from_pem, from_der);
    assert_eq!(from_pem.public_key_base64(), OPENSSL_PUBLIC_BASE64);

    let sec1 = ExportSigner::from_pem(OPENSSL_SEC1_PEM, info("310", "v1")).expect("SEC1");
    let pkcs8 = ExportSigner::from_pem(OPENSSL_PKCS8_PEM, info("310", "v1")).expect("PKCS#8");
    assert_eq!(sec1.public_key_pem(), OPENSSL_PUBLIC_PEM);
    assert_eq!(pkcs8.private_key_pem(), OPENSSL_PKCS8_PEM);

    let archive = signed(&sec1, &small_contents(&sec1.info));
    for key in [from_pem, from_base64, from_der] {
        assert_eq!(verify(&archive, &[key]).status, SignatureStatus::Verified);
    }
}

/// Keys that cannot be used are refused with the reason: wrong curve, wrong PEM label,
/// garbage, nothing.
#[test]
fn unusable_keys_are_refused() {
    assert!(matches!(
        VerificationKey::parse(P384_PUBLIC_PEM.as_bytes()),
        Err(KeyError::NotP256 { curve }) if curve == "1.3.132.0.34"
    ));
    assert!(matches!(
        VerificationKey::parse(OPENSSL_PKCS8_PEM.as_bytes()),
        Err(KeyError::PemLabel { found, .. }) if found == "PRIVATE KEY"
    ));
    assert!(matches!(
        ExportSigner::from_pem(OPENSSL_PUBLIC_PEM, SignatureInfo::default()),
        Err(KeyError::PemLabel { found, .. }) if found == "PUBLIC KEY"
    ));
    assert!(matches!(
        VerificationKey::parse(b"not a key!"),
        Err(KeyError::Base64(_))
    ));
    assert!(matches!(
        VerificationKey::parse(b" \n "),
        Err(KeyError::Empty)
    ));
    // Base64 that decodes, but to something other than a SubjectPublicKeyInfo.
    assert!(matches!(
        VerificationKey::parse(b"AAAA"),
        Err(KeyError::Spki(_))
    ));
    let message = VerificationKey::parse(P384_PUBLIC_PEM.as_bytes())
        .expect_err("P-384")
        .to_string();
    assert!(message.contains("not P-256"), "{message}");
}

/// A high-S signature (s > n/2, which ECDSA allows and some servers emit) is accepted.
#[test]
fn high_s_signature_is_accepted() {
    let signing_key = SigningKey::from_slice(&[0x5a; 32]).expect("valid scalar");
    let verification_key = VerificationKey::from_verifying_key(*signing_key.verifying_key());
    let export_bin = encode_export_bin(&small_contents(&SignatureInfo::default()));
    let low: Signature = signing_key.sign(&export_bin);
    let low = low.normalize_s();
    let (r, s) = low.split_scalars();
    let high = Signature::from_scalars(r.to_bytes(), (-s).to_bytes()).expect("n - s is in range");
    assert!(
        bool::from(high.s().is_high()),
        "the test signature really is high-S"
    );
    assert!(!bool::from(low.s().is_high()));

    for (what, signature) in [("low-S", low), ("high-S", high)] {
        let export_sig = TekSignatureList {
            signatures: vec![TekSignature {
                signature: Some(signature.to_der().as_bytes().to_vec()),
                ..TekSignature::default()
            }],
        }
        .encode_to_vec();
        let archive = read(&zip_of(&[
            ("export.bin", &export_bin),
            ("export.sig", &export_sig),
        ]));
        let check = verify(&archive, std::slice::from_ref(&verification_key));
        assert_eq!(check.status, SignatureStatus::Verified, "{what}: {check:?}");
    }
}

/// Changing any bit of export.bin (re-zipped with the original export.sig) never verifies:
/// the signature covers every byte, header included.
#[test]
fn any_flipped_bit_breaks_the_signature() {
    let signer = ExportSigner::generate(info("310", "v1"));
    let archive = signed(&signer, &small_contents(&signer.info));
    let export_sig = archive
        .export_sig
        .clone()
        .expect("signed zip has export.sig");
    let keys = [signer.verification_key()];
    let mut parsed_but_rejected = 0;
    for position in 0..archive.export_bin.len() {
        for bit in 0..8 {
            let mut export_bin = archive.export_bin.clone();
            export_bin[position] ^= 1 << bit;
            let zip = zip_of(&[("export.bin", &export_bin), ("export.sig", &export_sig)]);
            // Many flips make export.bin unreadable: rejected before any signature check.
            let Ok(tampered) = read_export("tampered.zip", &zip, &ReadLimits::default()) else {
                continue;
            };
            let check = verify(&tampered, &keys);
            assert_ne!(
                check.status,
                SignatureStatus::Verified,
                "byte {position} bit {bit} went unnoticed"
            );
            parsed_but_rejected += 1;
        }
    }
    // Flips inside key data still parse: those were caught by the signature itself.
    assert!(parsed_but_rejected > 5 * 16 * 8, "{parsed_but_rejected}");
}

/// A zip without export.sig reads fine, and verification says the signature is Absent.
#[test]
fn zip_without_signature_is_absent() {
    let export_bin = encode_export_bin(&small_contents(&SignatureInfo::default()));
    let archive = read(&zip_of(&[("export.bin", &export_bin)]));
    assert_eq!(archive.export_sig, None);
    let check = verify(&archive, &[]);
    assert_eq!(check.status, SignatureStatus::Absent);
    assert!(
        check
            .reason
            .as_deref()
            .unwrap_or("")
            .contains("no export.sig"),
        "{check:?}"
    );
    let error = verify_required(&archive, &[]).expect_err("absent");
    assert!(matches!(
        error.kind,
        ExportErrorKind::SignatureAbsent { .. }
    ));
}

/// An export.sig that is not a signature list is Invalid, and strict callers get the decode
/// error as the cause.
#[test]
fn garbage_signature_file_is_invalid() {
    let signer = ExportSigner::generate(info("310", "v1"));
    let export_bin = encode_export_bin(&small_contents(&signer.info));
    let archive = read(&zip_of(&[
        ("export.bin", &export_bin),
        ("export.sig", b"\xff\xff\xff not protobuf"),
    ]));
    let check = verify(&archive, &[signer.verification_key()]);
    assert_eq!(check.status, SignatureStatus::Invalid);
    assert!(
        check.reason.as_deref().unwrap_or("").contains("export.sig"),
        "{check:?}"
    );
    let error = verify_required(&archive, &[signer.verification_key()]).expect_err("invalid");
    assert!(
        matches!(error.kind, ExportErrorKind::BadSignatureFile(_)),
        "{error}"
    );
    assert!(
        std::error::Error::source(&error).is_some(),
        "the decode error is the cause"
    );

    // An empty export.sig decodes to an empty list: still no signature to trust.
    let archive = read(&zip_of(&[("export.bin", &export_bin), ("export.sig", b"")]));
    assert_eq!(
        verify(&archive, &[signer.verification_key()]).status,
        SignatureStatus::Invalid
    );
}

/// A genuine signature is still refused when its label contradicts the file: another
/// algorithm, another batch position, or DER that is not a signature.
#[test]
fn signature_metadata_must_agree() {
    let signer = ExportSigner::generate(info("310", "v1"));
    let contents = small_contents(&signer.info);
    let export_bin = encode_export_bin(&contents);
    let genuine = signer.sign(&export_bin, contents.batch_num, contents.batch_size);
    let keys = [signer.verification_key()];
    let check_with = |edit: &dyn Fn(&mut TekSignature)| {
        let mut signature = genuine.clone();
        edit(&mut signature);
        let export_sig = TekSignatureList {
            signatures: vec![signature],
        }
        .encode_to_vec();
        verify(
            &read(&zip_of(&[
                ("export.bin", &export_bin),
                ("export.sig", &export_sig),
            ])),
            &keys,
        )
    };

    assert_eq!(check_with(&|_| ()).status, SignatureStatus::Verified);
    let check = check_with(&|s| {
        if let Some(info) = s.signature_info.as_mut() {
            info.signature_algorithm = Some("1.2.840.10045.4.3.3".into());
        }
    });
    assert_eq!(check.status, SignatureStatus::Invalid);
    assert!(
        check
            .reason
            .as_deref()
            .unwrap_or("")
            .contains("signature_algorithm"),
        "{check:?}"
    );
    let check = check_with(&|s| s.batch_size = Some(2));
    assert_eq!(check.status, SignatureStatus::Invalid);
    assert!(
        check
            .reason
            .as_deref()
            .unwrap_or("")
            .contains("batch_size 2"),
        "{check:?}"
    );
    let check = check_with(&|s| s.signature = Some(vec![0x30, 0x03, 0x02, 0x01, 0x01]));
    assert_eq!(check.status, SignatureStatus::Invalid);
    assert!(
        check.reason.as_deref().unwrap_or("").contains("not a DER"),
        "{check:?}"
    );
}

/// Interoperability both ways with OpenSSL: our encoder writes exactly these bytes, and a
/// signature made over them by `openssl dgst -sha256 -sign` (with the test key above) verifies.
#[test]
fn openssl_signature_verifies() {
    let contents = ExportContents {
        region: "MA".into(),
        keys: vec![DiagnosisKey {
            transmission_risk_level: Some(1),
            report_type: Some(ReportType::ConfirmedTest),
            days_since_onset_of_symptoms: Some(0),
            ..key(0x42, 2_650_000)
        }],
        ..ExportContents::default()
    };
    let export_bin = encode_export_bin(&contents);
    assert_eq!(
        hex::encode(&export_bin),
        "454b204578706f7274207631202020200900000000000000001100000000000000001a024d41200128013a20\
         0a104242424242424242424242424242424210011890dfa10120900128013000"
    );
    let openssl_der = hex::decode(
        "30440220287d6948b68ca5f64a451afc8424524d6e4eac17fbcc88e7247de4d4a696060b02202b959cc9a1\
         16680598f61fc1b5528e73c216daf282f379cc3e5f8b37d1419aa3",
    )
    .expect("hex");
    let export_sig = TekSignatureList {
        signatures: vec![TekSignature {
            signature_info: Some((&info("310", "v1")).into()),
            batch_num: Some(1),
            batch_size: Some(1),
            signature: Some(openssl_der),
        }],
    }
    .encode_to_vec();
    let archive = read(&zip_of(&[
        ("export.bin", &export_bin),
        ("export.sig", &export_sig),
    ]));
    let key = VerificationKey::parse(OPENSSL_PUBLIC_PEM.as_bytes())
        .expect("PEM")
        .with_id(Some("310".into()), Some("v1".into()));
    let check = verify(&archive, &[key]);
    assert_eq!(check.status, SignatureStatus::Verified, "{check:?}");
}
