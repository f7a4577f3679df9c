//! Hostile and broken export files: each is refused with the right typed error and a message
//! naming the file and the problem, and no input, however mangled, makes the reader panic or
//! lets a tampered `export.bin` verify.

use proptest::prelude::*;
use proptest::sample::Index;
use prost::Message;
use std::io::{Cursor, Write};
use venuetrace::crypto::{Enin, RollingPeriod, Tek};
use venuetrace::export::proto::{TemporaryExposureKey, TemporaryExposureKeyExport};
use venuetrace::export::{
    DiagnosisKey, EXPORT_BIN_HEADER, ExportContents, ExportError, ExportErrorKind, ExportSigner,
    ReadLimits, SignatureInfo, SignatureStatus, encode_export_bin, read_export, verify,
    write_export_zip,
};
use zip::CompressionMethod;
use zip::write::SimpleFileOptions;

/// Test-only P-256 key (made with OpenSSL), so that the valid zip is the same on every run.
const TEST_KEY_PEM: &str = "-----BEGIN PRIVATE KEY-----
MIGHAgEAMBMGByqGSM49AgEGCCqGSM49AwEHBG0wawIBAQQgyeJZegnMlJXqPDZy
5C141fmGJzJlKTEXJ6BeWZtmHD+hRANCAAQeIyi5OG4mdbsYoMkCDGHZVTLc4YHU
lnhoKIDCdkqLYtbuGtwLqaMzFoFgXL2sSOpCc+R3Xxmk3koL3dc+W6MK
-----END PRIVATE KEY-----
";

fn signer() -> ExportSigner {
    ExportSigner::from_pem(TEST_KEY_PEM, SignatureInfo::default()).expect("test key parses")
}

fn contents() -> ExportContents {
    ExportContents {
        region: "MA".into(),
        keys: (0..3)
            .map(|i| DiagnosisKey {
                tek: Tek::from_bytes([i; 16]),
                transmission_risk_level: Some(1),
                rolling_start: Enin(2_650_000),
                rolling_period: RollingPeriod::DAY,
                report_type: None,
                days_since_onset_of_symptoms: Some(-1),
            })
            .collect(),
        ..ExportContents::default()
    }
}

fn valid_bare() -> Vec<u8> {
    encode_export_bin(&contents())
}

fn valid_zip() -> Vec<u8> {
    write_export_zip(&contents(), &signer()).expect("writes")
}

fn zip_of(entries: &[(&str, &[u8])], method: CompressionMethod) -> Vec<u8> {
    let mut zip = zip::ZipWriter::new(Cursor::new(Vec::new()));
    let options = SimpleFileOptions::default().compression_method(method);
    for (name, data) in entries {
        zip.start_file(*name, options).expect("in-memory zip entry");
        zip.write_all(data).expect("in-memory write");
    }
    zip.finish().expect("in-memory zip").into_inner()
}

/// `export.bin` with a hand-made protobuf body, for fields the writer would never produce.
fn bare_with(body: &TemporaryExposureKeyExport) -> Vec<u8> {
    let mut bytes = EXPORT_BIN_HEADER.to_vec();
    bytes.extend(body.encode_to_vec());
    bytes
}

fn wire_key(seed: u8) -> TemporaryExposureKey {
    TemporaryExposureKey {
        key_data: Some(vec![seed; 16]),
        rolling_start_interval_number: Some(2_650_000),
        ..TemporaryExposureKey::default()
    }
}

fn refuse(name: &str, bytes: &[u8]) -> ExportError {
    refuse_with(name, bytes, &ReadLimits::default())
}

fn refuse_with(name: &str, bytes: &[u8], limits: &ReadLimits) -> ExportError {
    match read_export(name, bytes, limits) {
        Ok(archive) => panic!("{name} was accepted: {archive:?}"),
        Err(error) => error,
    }
}

/// The whole error chain, as `anyhow`'s `{:#}` would print it.
fn chain(error: &ExportError) -> String {
    let mut text = error.to_string();
    let mut source = std::error::Error::source(error);
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

/// An empty file is its own problem, named as such.
#[test]
fn empty_file() {
    let error = refuse("empty.zip", b"");
    assert!(matches!(error.kind, ExportErrorKind::Empty));
    assert_eq!(error.to_string(), "empty.zip: file is empty");
}

/// Every prefix of a valid bare export.bin is handled: cut inside the header it is reported as
/// truncated; after the header it parses only if the cut happens to fall between fields.
#[test]
fn every_truncation_of_a_bare_export() {
    let bin = valid_bare();
    let mut parsed = 0;
    for len in 0..bin.len() {
        let prefix = &bin[..len];
        match read_export("cut.bin", prefix, &ReadLimits::default()) {
            Err(error) if len == 0 => assert!(matches!(error.kind, ExportErrorKind::Empty)),
            Err(error) if len < EXPORT_BIN_HEADER.len() => {
                assert!(
                    matches!(error.kind, ExportErrorKind::Truncated { len: l } if l == len),
                    "{len}: {error}"
                );
                assert!(
                    error
                        .to_string()
                        .starts_with("cut.bin: export.bin: ends after")
                );
            }
            Err(error) => assert!(
                matches!(error.kind, ExportErrorKind::Protobuf(_)),
                "{len}: {error}"
            ),
            Ok(_) => {
                assert!(len >= EXPORT_BIN_HEADER.len(), "{len} bytes parsed");
                parsed += 1;
            }
        }
    }
    // The header alone is an empty export; a few other cuts fall between fields.
    assert!(parsed >= 1);
    assert!(
        parsed < bin.len() / 2,
        "most cuts land inside a field: {parsed}"
    );
}

/// No proper prefix of a zip is readable (its directory is at the end): all are refused.
#[test]
fn every_truncation_of_a_zip() {
    let zip = valid_zip();
    for len in 4..zip.len() {
        let error = refuse("cut.zip", &zip[..len]);
        assert!(
            matches!(
                error.kind,
                ExportErrorKind::BadZip(_) | ExportErrorKind::BadZipEntry { .. }
            ),
            "{len}: {error}"
        );
        assert!(error.to_string().starts_with("cut.zip: "));
    }
}

/// A header of another version is refused with the header it found, bare or zipped.
#[test]
fn bad_header() {
    let mut bin = valid_bare();
    bin[11] = b'2';
    let error = refuse("v2.bin", &bin);
    assert!(
        matches!(&error.kind, ExportErrorKind::BadHeader { found } if found == "EK Export v2    ")
    );
    assert_eq!(
        error.to_string(),
        "v2.bin: export.bin: header is \"EK Export v2    \", expected \"EK Export v1    \""
    );
    let error = refuse(
        "v2.zip",
        &zip_of(&[("export.bin", &bin)], CompressionMethod::Stored),
    );
    assert!(
        matches!(error.kind, ExportErrorKind::BadHeader { .. }),
        "{error}"
    );
    // Inside a zip, export.bin may be binary junk: it is escaped, not printed raw.
    let error = refuse(
        "junk.zip",
        &zip_of(
            &[("export.bin", b"\x1b[2J\x00\x01junk")],
            CompressionMethod::Stored,
        ),
    );
    assert!(
        error
            .to_string()
            .contains(r#"header is "\x1b[2J\x00\x01junk""#),
        "{error}"
    );
}

/// Bytes that are neither a zip nor an export are refused as such, showing how they start.
#[test]
fn not_an_export() {
    let error = refuse("photo.zip", b"\x89PNG\r\n\x1a\n and more");
    assert!(matches!(error.kind, ExportErrorKind::NotAnExport { .. }));
    assert!(
        error
            .to_string()
            .starts_with(r#"photo.zip: not an export file: starts with "\x89PNG"#),
        "{error}"
    );
}

/// The zip magic followed by garbage is an unreadable zip, with the zip error as cause.
#[test]
fn bad_zip() {
    let error = refuse("bad.zip", b"PK\x03\x04 this is not the rest of a zip file");
    assert!(matches!(error.kind, ExportErrorKind::BadZip(_)));
    assert_eq!(error.to_string(), "bad.zip: zip archive is unreadable");
    assert!(std::error::Error::source(&error).is_some());
}

/// A zip without export.bin is refused, even if it has export.sig.
#[test]
fn zip_without_export_bin() {
    let zip = zip_of(
        &[("export.sig", b"sig"), ("EXPORT.BIN", &valid_bare())],
        CompressionMethod::Deflated,
    );
    let error = refuse("nobin.zip", &zip);
    assert!(matches!(error.kind, ExportErrorKind::MissingExportBin));
    assert_eq!(error.to_string(), "nobin.zip: zip has no export.bin entry");
}

/// A small zip that inflates past the limit is stopped at the limit, for export.bin and
/// export.sig alike.
#[test]
fn zip_bomb() {
    let limits = ReadLimits {
        max_entry_bytes: 1024 * 1024,
        ..ReadLimits::default()
    };
    let mut zeros = valid_bare();
    zeros.resize(2 * 1024 * 1024, 0);
    let bomb = zip_of(&[("export.bin", &zeros)], CompressionMethod::Deflated);
    assert!(bomb.len() < 16 * 1024, "a real bomb: {} bytes", bomb.len());
    let error = refuse_with("bomb.zip", &bomb, &limits);
    assert!(
        matches!(
            error.kind,
            ExportErrorKind::EntryTooLarge {
                entry: "export.bin",
                limit: 1_048_576
            }
        ),
        "{error}"
    );
    assert_eq!(
        error.to_string(),
        "bomb.zip: export.bin: larger than the limit of 1048576 bytes"
    );

    let sig_bomb = zip_of(
        &[
            ("export.bin", &valid_bare()),
            ("export.sig", &vec![0; 2 * 1024 * 1024]),
        ],
        CompressionMethod::Deflated,
    );
    let error = refuse_with("bomb.zip", &sig_bomb, &limits);
    assert!(
        matches!(
            error.kind,
            ExportErrorKind::EntryTooLarge {
                entry: "export.sig",
                ..
            }
        ),
        "{error}"
    );

    // The same limit applies to a bare export.bin.
    let error = refuse_with("big.bin", &zeros, &limits);
    assert!(
        matches!(
            error.kind,
            ExportErrorKind::EntryTooLarge {
                entry: "export.bin",
                ..
            }
        ),
        "{error}"
    );
}

/// A bomb whose headers lie about its size (claiming 100 bytes) is refused all the same: sizes
/// in zip headers are never trusted.
#[test]
fn zip_bomb_with_lying_sizes() {
    let limits = ReadLimits {
        max_entry_bytes: 1024 * 1024,
        ..ReadLimits::default()
    };
    let mut zeros = valid_bare();
    zeros.resize(2 * 1024 * 1024, 0);
    let mut bomb = zip_of(&[("export.bin", &zeros)], CompressionMethod::Deflated);
    let real_size = u32::try_from(zeros.len()).expect("2 MiB").to_le_bytes();
    let positions: Vec<usize> = bomb
        .windows(4)
        .enumerate()
        .filter(|(_, w)| *w == real_size)
        .map(|(i, _)| i)
        .collect();
    assert_eq!(
        positions.len(),
        2,
        "local and central headers both state the size"
    );
    for position in positions {
        bomb[position..position + 4].copy_from_slice(&100u32.to_le_bytes());
    }
    let error = refuse_with("liar.zip", &bomb, &limits);
    assert!(
        matches!(
            error.kind,
            ExportErrorKind::EntryTooLarge { .. } | ExportErrorKind::BadZipEntry { .. }
        ),
        "{error}"
    );
}

/// A zip listing far more entries than an export has is refused before any is read.
#[test]
fn too_many_zip_entries() {
    let names: Vec<String> = (0..65).map(|i| format!("filler-{i}")).collect();
    let bin = valid_bare();
    let mut entries: Vec<(&str, &[u8])> = vec![("export.bin", &bin)];
    entries.extend(names.iter().map(|name| (name.as_str(), &b""[..])));
    let error = refuse("crowded.zip", &zip_of(&entries, CompressionMethod::Stored));
    assert!(
        matches!(
            error.kind,
            ExportErrorKind::TooManyEntries {
                count: 66,
                limit: 64
            }
        ),
        "{error}"
    );
}

/// Two entries named export.bin are ambiguous: the zip is refused.
#[test]
fn duplicate_export_bin_entries() {
    let bin = valid_bare();
    let mut zip = zip_of(
        &[("export.bin", &bin), ("export.biX", &bin)],
        CompressionMethod::Stored,
    );
    // The zip writer refuses duplicate names, so rename the second entry in place.
    for i in 0..zip.len() - 10 {
        if &zip[i..i + 10] == b"export.biX" {
            zip[i + 9] = b'n';
        }
    }
    let error = refuse("twice.zip", &zip);
    assert!(
        matches!(error.kind, ExportErrorKind::DuplicateEntries),
        "{error}"
    );
    assert_eq!(
        error.to_string(),
        "twice.zip: zip holds two entries with the same name"
    );
}

/// Key data of the wrong length is refused with the list, the index and the length: the
/// message of the design document, word for word.
#[test]
fn key_data_of_15_bytes() {
    let mut keys: Vec<TemporaryExposureKey> = (0..18).map(wire_key).collect();
    keys[17].key_data = Some(vec![17; 15]);
    let bin = bare_with(&TemporaryExposureKeyExport {
        keys,
        ..Default::default()
    });
    let error = refuse(
        "export.zip",
        &zip_of(&[("export.bin", &bin)], CompressionMethod::Deflated),
    );
    assert!(
        matches!(
            error.kind,
            ExportErrorKind::KeyDataLength {
                list: "keys",
                index: 17,
                len: 15
            }
        ),
        "{error}"
    );
    assert_eq!(
        error.to_string(),
        "export.zip: keys[17]: key_data is 15 bytes, expected 16"
    );
}

/// Missing key data, a missing or negative rolling start are each refused, naming the key.
#[test]
fn missing_and_negative_key_fields() {
    let mut key = wire_key(1);
    key.key_data = None;
    let error = refuse(
        "a.bin",
        &bare_with(&TemporaryExposureKeyExport {
            keys: vec![key],
            ..Default::default()
        }),
    );
    assert!(matches!(
        error.kind,
        ExportErrorKind::MissingKeyData {
            list: "keys",
            index: 0
        }
    ));
    assert_eq!(error.to_string(), "a.bin: keys[0]: key_data is missing");

    let mut key = wire_key(1);
    key.rolling_start_interval_number = None;
    let body = TemporaryExposureKeyExport {
        revised_keys: vec![wire_key(2), key],
        ..Default::default()
    };
    let error = refuse("a.bin", &bare_with(&body));
    assert!(matches!(
        error.kind,
        ExportErrorKind::MissingRollingStart {
            list: "revised_keys",
            index: 1
        }
    ));

    let mut key = wire_key(1);
    key.rolling_start_interval_number = Some(-5);
    let error = refuse(
        "a.bin",
        &bare_with(&TemporaryExposureKeyExport {
            keys: vec![key],
            ..Default::default()
        }),
    );
    assert!(matches!(
        error.kind,
        ExportErrorKind::NegativeRollingStart { value: -5, .. }
    ));
    assert_eq!(
        error.to_string(),
        "a.bin: keys[0]: rolling_start_interval_number -5 is negative"
    );
}

/// Rolling periods must be 1..=144: 0 and 145 are refused with the value in the cause; an
/// absent one means 144.
#[test]
fn rolling_period_bounds() {
    for bad in [0, 145, -1] {
        let mut key = wire_key(1);
        key.rolling_period = Some(bad);
        let error = refuse(
            "p.bin",
            &bare_with(&TemporaryExposureKeyExport {
                keys: vec![wire_key(0), key],
                ..Default::default()
            }),
        );
        assert!(
            matches!(
                error.kind,
                ExportErrorKind::RollingPeriod {
                    list: "keys",
                    index: 1,
                    ..
                }
            ),
            "{error}"
        );
        assert_eq!(
            chain(&error),
            format!(
                "p.bin: keys[1]: invalid rolling_period: rolling period {bad} is outside 1..=144"
            )
        );
    }
    let archive = read_export(
        "p.bin",
        &bare_with(&TemporaryExposureKeyExport {
            keys: vec![wire_key(0)],
            ..Default::default()
        }),
        &ReadLimits::default(),
    )
    .expect("an absent rolling period is valid");
    assert_eq!(archive.contents.keys[0].rolling_period.get(), 144);
}

/// The same key twice in one list is refused, naming both positions; a key may reappear in
/// revised_keys (that is what revising means).
#[test]
fn duplicate_keys() {
    let keys = vec![
        wire_key(0),
        wire_key(1),
        wire_key(2),
        wire_key(3),
        wire_key(1),
    ];
    let error = refuse(
        "dup.bin",
        &bare_with(&TemporaryExposureKeyExport {
            keys: keys.clone(),
            ..Default::default()
        }),
    );
    assert!(
        matches!(
            error.kind,
            ExportErrorKind::DuplicateKey {
                list: "keys",
                first: 1,
                second: 4
            }
        ),
        "{error}"
    );
    assert_eq!(
        error.to_string(),
        "dup.bin: keys[4]: key_data repeats keys[1]"
    );

    let body = TemporaryExposureKeyExport {
        revised_keys: vec![wire_key(5), wire_key(5)],
        ..Default::default()
    };
    let error = refuse("dup.bin", &bare_with(&body));
    assert!(
        matches!(
            error.kind,
            ExportErrorKind::DuplicateKey {
                list: "revised_keys",
                ..
            }
        ),
        "{error}"
    );

    let body = TemporaryExposureKeyExport {
        keys: vec![wire_key(1)],
        revised_keys: vec![wire_key(1)],
        ..Default::default()
    };
    assert!(read_export("revised.bin", &bare_with(&body), &ReadLimits::default()).is_ok());
}

/// More keys than the limit (both lists together) are refused before they are decoded.
#[test]
fn too_many_keys() {
    let limits = ReadLimits {
        max_keys: 10,
        ..ReadLimits::default()
    };
    let body = TemporaryExposureKeyExport {
        keys: (0..6).map(wire_key).collect(),
        revised_keys: (6..11).map(wire_key).collect(),
        ..Default::default()
    };
    let error = refuse_with("many.bin", &bare_with(&body), &limits);
    assert!(
        matches!(
            error.kind,
            ExportErrorKind::TooManyKeys {
                count: 11,
                limit: 10
            }
        ),
        "{error}"
    );
    assert_eq!(
        error.to_string(),
        "many.bin: export.bin: holds 11 keys, more than the limit of 10"
    );

    // Empty key messages cost 2 bytes each on the wire: refused by count, not by memory.
    let mut bin = EXPORT_BIN_HEADER.to_vec();
    for _ in 0..100_000 {
        bin.extend_from_slice(&[0x3a, 0x00]);
    }
    let error = refuse_with("cheap.bin", &bin, &limits);
    assert!(
        matches!(
            error.kind,
            ExportErrorKind::TooManyKeys { count: 100_000, .. }
        ),
        "{error}"
    );
}

/// A position outside its batch is refused.
#[test]
fn impossible_batch_position() {
    let body = TemporaryExposureKeyExport {
        batch_num: Some(3),
        batch_size: Some(2),
        ..Default::default()
    };
    let error = refuse("batch.bin", &bare_with(&body));
    assert!(
        matches!(
            error.kind,
            ExportErrorKind::BatchNumber {
                batch_num: 3,
                batch_size: 2
            }
        ),
        "{error}"
    );
}

/// Garbage after a valid header is a protobuf error, with the decoder's reason as cause.
#[test]
fn protobuf_garbage() {
    let mut bin = EXPORT_BIN_HEADER.to_vec();
    bin.extend_from_slice(b"\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff");
    let error = refuse("garbage.bin", &bin);
    assert!(matches!(error.kind, ExportErrorKind::Protobuf(_)));
    assert!(
        chain(&error).starts_with("garbage.bin: export.bin: protobuf decode failed: "),
        "{}",
        chain(&error)
    );
}

/// Applies `edits` (position, new byte) and cuts at `cut` (if given).
fn mangle(original: &[u8], edits: &[(Index, u8)], cut: Option<Index>) -> Vec<u8> {
    let mut bytes = original.to_vec();
    for (position, byte) in edits {
        let i = position.index(bytes.len());
        bytes[i] = *byte;
    }
    if let Some(cut) = cut {
        bytes.truncate(cut.index(bytes.len() + 1));
    }
    bytes
}

proptest! {
    /// Mangled zips never panic the reader, and whatever still verifies carries exactly the
    /// export.bin that was signed.
    #[test]
    fn mangled_zips_never_panic_nor_verify_altered_bytes(
        edits in proptest::collection::vec((any::<Index>(), any::<u8>()), 0..6),
        cut in proptest::option::of(any::<Index>()),
    ) {
        let original = valid_zip();
        let bytes = mangle(&original, &edits, cut);
        if let Ok(archive) = read_export("mangled.zip", &bytes, &ReadLimits::default()) {
            let check = verify(&archive, &[signer().verification_key()]);
            if check.status == SignatureStatus::Verified {
                prop_assert_eq!(archive.export_bin, valid_bare());
            }
        }
    }

    /// Mangled bare exports never panic the reader, and whatever is accepted writes back to
    /// the same contents.
    #[test]
    fn mangled_bare_exports_never_panic_and_accepted_ones_round_trip(
        edits in proptest::collection::vec((any::<Index>(), any::<u8>()), 0..6),
        cut in proptest::option::of(any::<Index>()),
    ) {
        let bytes = mangle(&valid_bare(), &edits, cut);
        if let Ok(archive) = read_export("mangled.bin", &bytes, &ReadLimits::default()) {
            let again = read_export("again.bin", &encode_export_bin(&archive.contents), &ReadLimits::default())
                .expect("accepted contents write back validly");
            prop_assert_eq!(again.contents, archive.contents);
        }
    }

    /// Arbitrary bytes, with or without a valid start, never panic the reader.
    #[test]
    fn arbitrary_bytes_never_panic(
        prefix in proptest::sample::select(vec![&b""[..], &b"PK\x03\x04"[..], &EXPORT_BIN_HEADER[..]]),
        tail in proptest::collection::vec(any::<u8>(), 0..512),
    ) {
        let mut bytes = prefix.to_vec();
        bytes.extend(tail);
        let _ = read_export("random", &bytes, &ReadLimits::default());
    }
}
