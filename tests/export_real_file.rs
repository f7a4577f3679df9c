//! A real diagnosis-key export, as Google's reference app ships it (see
//! `../shared/testdata/README.md`): the reader must agree with every published fact about it.

use sha2::{Digest, Sha256};
use venuetrace::export::{
    DiagnosisKey, EXPORT_BIN_HEADER, ExportArchive, ReadLimits, SignatureInfo, SignatureStatus,
    encode_export_bin, read_export, verify,
};

const FIXTURE: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../shared/testdata/gaen-export-110-keys.bin"
);

fn fixture_bytes() -> Vec<u8> {
    std::fs::read(FIXTURE).unwrap_or_else(|error| {
        panic!(
            "cannot read {FIXTURE}: {error}; the shared test data directory `../shared` must sit \
             beside this repository"
        )
    })
}

fn fixture() -> ExportArchive {
    read_export(
        "gaen-export-110-keys.bin",
        &fixture_bytes(),
        &ReadLimits::default(),
    )
    .expect("the real export parses")
}

/// The fixture is the genuine file (so the facts below are about the right bytes).
#[test]
fn fixture_is_the_genuine_file() {
    let bytes = fixture_bytes();
    assert_eq!(bytes.len(), 3284);
    assert_eq!(
        hex::encode(Sha256::digest(&bytes)),
        "9db8c7ad6f8c3d4ff975bf38b441a6d4689ce9419329e546f6c6014f8090a94e"
    );
}

/// The header fields read as published: 1588885200..1588890000, region US, batch 1 of 1.
#[test]
fn header_fields() {
    let archive = fixture();
    assert!(archive.export_bin.starts_with(EXPORT_BIN_HEADER));
    assert_eq!(
        archive.export_bin,
        fixture_bytes(),
        "export_bin keeps the exact bytes"
    );
    let contents = &archive.contents;
    assert_eq!(contents.start_timestamp, 1_588_885_200);
    assert_eq!(contents.end_timestamp, 1_588_890_000);
    assert_eq!(contents.region, "US");
    assert_eq!((contents.batch_num, contents.batch_size), (1, 1));
}

/// Its signature infos use the legacy field 2, which is skipped: what remains are the current
/// fields, and no error.
#[test]
fn legacy_signature_info_is_accepted() {
    let archive = fixture();
    // Field 2 (android_package) really is in the raw bytes...
    let package = b"com.google.android.apps.exposurenotification";
    assert!(
        archive
            .export_bin
            .windows(package.len())
            .any(|w| w == package),
        "the fixture carries a legacy android_package"
    );
    // ...and it is the only field of its one SignatureInfo: what remains is an empty info.
    assert_eq!(archive.contents.signature_infos, [SignatureInfo::default()]);
}

/// 110 keys, no revised keys, with the published ranges of every field.
#[test]
fn keys_match_the_published_facts() {
    let contents = fixture().contents;
    assert_eq!(contents.keys.len(), 110);
    assert!(contents.revised_keys.is_empty());

    let periods: Vec<u32> = contents
        .keys
        .iter()
        .map(|k| k.rolling_period.get())
        .collect();
    assert!(periods.iter().all(|p| (2..=144).contains(p)), "{periods:?}");
    assert!(
        periods.iter().any(|&p| p != 144),
        "not all keys use the default period"
    );

    let risks: Vec<Option<i32>> = contents
        .keys
        .iter()
        .map(|k| k.transmission_risk_level)
        .collect();
    assert!(risks.iter().all(|r| matches!(r, Some(1 | 2))), "{risks:?}");

    let starts = contents.keys.iter().map(|k| k.rolling_start.0);
    assert_eq!(starts.clone().min(), Some(2_641_369));
    assert_eq!(starts.max(), Some(2_648_143));
}

/// The first key, field by field.
#[test]
fn first_key() {
    let contents = fixture().contents;
    let first: &DiagnosisKey = contents.keys.first().expect("keys");
    assert_eq!(first.tek.to_hex(), "00e484ab69328ecfca4ce547deea3e0d");
    assert_eq!(first.transmission_risk_level, Some(2));
    assert_eq!(first.rolling_start.0, 2_645_035);
    assert_eq!(first.rolling_period.get(), 117);
}

/// A bare export.bin carries no signature: verification says Absent, and says why.
#[test]
fn bare_file_signature_is_absent() {
    let check = verify(&fixture(), &[]);
    assert_eq!(check.status, SignatureStatus::Absent);
    assert_eq!(check.signatures, 0);
    assert!(
        check
            .reason
            .as_deref()
            .unwrap_or("")
            .contains("bare export.bin"),
        "{check:?}"
    );
}

/// Writing the parsed contents and reading them again gives the same contents.
#[test]
fn re_encoding_round_trips() {
    let original = fixture().contents;
    let bytes = encode_export_bin(&original);
    let again = read_export("re-encoded.bin", &bytes, &ReadLimits::default())
        .expect("own output parses")
        .contents;
    assert_eq!(again.keys, original.keys);
    assert_eq!(again, original);
}
