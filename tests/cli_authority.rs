//! `venuetrace-authority keys …` through the real binary: the output contracts operators and
//! acceptance checks rely on (README.md), and the sysexits codes of each failure.

mod common;

use serde_json::Value;
use std::path::Path;
use std::process::{Command, Output};
use venuetrace::crypto::{Enin, RollingPeriod, Tek};
use venuetrace::export::{
    self, DiagnosisKey, ExportContents, ExportSigner, ReportType, SignatureInfo,
};

fn authority(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_venuetrace-authority"))
        .args(args)
        .output()
        .expect("the venuetrace-authority binary runs")
}

fn stdout(output: &Output) -> String {
    String::from_utf8(output.stdout.clone()).expect("stdout is UTF-8")
}

fn stderr(output: &Output) -> String {
    String::from_utf8(output.stderr.clone()).expect("stderr is UTF-8")
}

fn testdata_str(name: &str) -> String {
    common::testdata(name)
        .to_str()
        .expect("UTF-8 path")
        .to_owned()
}

/// A signed export zip of three keys, written with the library's writer, and its signer.
fn signed_zip(dir: &Path) -> (std::path::PathBuf, ExportSigner) {
    let signer = ExportSigner::generate(SignatureInfo {
        verification_key_version: Some("v1".into()),
        verification_key_id: Some("604".into()),
        signature_algorithm: Some(export::ECDSA_P256_SHA256_OID.into()),
    });
    let key = |byte: u8, report_type, onset| DiagnosisKey {
        tek: Tek::from_bytes([byte; 16]),
        transmission_risk_level: None,
        rolling_start: Enin(2_650_000),
        rolling_period: RollingPeriod::DAY,
        report_type,
        days_since_onset_of_symptoms: onset,
    };
    let contents = ExportContents {
        start_timestamp: 1_590_000_000,
        end_timestamp: 1_590_086_400,
        region: "MA".into(),
        signature_infos: vec![signer.info.clone()],
        keys: vec![
            key(1, Some(ReportType::ConfirmedTest), Some(-2)),
            key(2, None, None),
        ],
        revised_keys: vec![key(3, Some(ReportType::Revoked), Some(4))],
        ..ExportContents::default()
    };
    let zip = export::write_export_zip(&contents, &signer).expect("writing the zip");
    let path = dir.join("export.zip");
    std::fs::write(&path, zip).expect("writing the zip file");
    (path, signer)
}

/// `keys derive` prints "ENIN RPI AEM" lines equal to the official test vectors, all 144.
#[test]
fn derive_prints_the_official_vectors() {
    let vectors: Value = serde_json::from_slice(&common::read_testdata("en-crypto-vectors.json"))
        .expect("vectors parse");
    let out = authority(&[
        "keys",
        "derive",
        "--tek",
        vectors["tek"].as_str().expect("tek"),
        "--enin",
        &vectors["tek_rolling_start_interval_number"].to_string(),
        "--metadata",
        vectors["metadata"].as_str().expect("metadata"),
    ]);
    assert!(out.status.success(), "{}", stderr(&out));
    let lines: Vec<String> = stdout(&out).lines().map(str::to_owned).collect();
    let expected: Vec<String> = vectors["intervals"]
        .as_array()
        .expect("intervals")
        .iter()
        .map(|i| {
            format!(
                "{} {} {}",
                i["enin"],
                i["rpi"].as_str().expect("rpi"),
                i["aem"].as_str().expect("aem")
            )
        })
        .collect();
    assert_eq!(lines.len(), 144, "default --count is a whole day");
    assert_eq!(lines, expected);
}

/// Without `--metadata`, lines carry only the ENIN and the RPI; `--count` is honoured.
#[test]
fn derive_without_metadata_and_with_count() {
    let out = authority(&[
        "keys",
        "derive",
        "--tek",
        "75c734c6dd1a782de7a965da5eb93125",
        "--enin",
        "2642977",
        "--count",
        "2",
    ]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(
        stdout(&out),
        "2642977 3c9a1de5dd6b02afa7fded7b570b3e56\n2642978 243ffe9a3b08bded3094bac8630bb8ad\n"
    );
}

/// `keys inspect --format json` of the real 110-key export follows the documented shape, with
/// absent optional fields as null and the signature "absent" for a bare export.bin.
#[test]
fn inspect_json_of_the_real_export() {
    let out = authority(&[
        "keys",
        "inspect",
        &testdata_str("gaen-export-110-keys.bin"),
        "--format",
        "json",
    ]);
    assert!(out.status.success(), "{}", stderr(&out));
    let doc: Value = serde_json::from_str(&stdout(&out)).expect("stdout is JSON");
    assert_eq!(doc["start_timestamp"], 1_588_885_200u64);
    assert_eq!(doc["end_timestamp"], 1_588_890_000u64);
    assert_eq!(doc["region"], "US");
    assert_eq!(
        (doc["batch_num"].clone(), doc["batch_size"].clone()),
        (1.into(), 1.into())
    );
    assert_eq!(doc["keys"].as_array().expect("keys").len(), 110);
    assert_eq!(doc["revised_keys"], Value::Array(vec![]));
    assert_eq!(
        doc["keys"][0],
        serde_json::json!({
            "key_data": "00e484ab69328ecfca4ce547deea3e0d",
            "transmission_risk_level": 2,
            "rolling_start_interval_number": 2645035,
            "rolling_period": 117,
            "report_type": null,
            "days_since_onset_of_symptoms": null,
        })
    );
    assert_eq!(doc["signature"]["status"], "absent");
}

/// `--require-signature` on an unsigned file prints the report but exits 65 with the reason.
#[test]
fn require_signature_rejects_an_unsigned_file() {
    let out = authority(&[
        "keys",
        "inspect",
        &testdata_str("gaen-export-110-keys.bin"),
        "--require-signature",
    ]);
    assert_eq!(out.status.code(), Some(65));
    assert!(stdout(&out).contains("110 (revised: 0)"));
    let err = stderr(&out);
    assert!(
        err.contains("gaen-export-110-keys.bin") && err.contains("absent"),
        "{err}"
    );
    assert_eq!(
        err.matches("absent").count(),
        1,
        "the reason is said once: {err}"
    );
}

/// A signed zip verifies with its key given as a PEM file or as inline base64, also when the
/// key is labelled with the matching id and version; other statuses come out as documented.
#[test]
fn inspect_verifies_signed_zips() {
    let dir = tempfile::tempdir().expect("temp dir");
    let (zip, signer) = signed_zip(dir.path());
    let zip = zip.to_str().expect("UTF-8 path");
    let pem = dir.path().join("key.pem");
    std::fs::write(&pem, signer.public_key_pem()).expect("writing the PEM");
    let pem = pem.to_str().expect("UTF-8 path");
    let base64 = signer.verification_key().public_key_base64();

    for key in [
        pem.to_owned(),
        base64.clone(),
        format!("604:v1@{pem}"),
        format!("604@{base64}"),
    ] {
        let out = authority(&[
            "keys",
            "inspect",
            zip,
            "--public-key",
            &key,
            "--require-signature",
            "--format",
            "json",
        ]);
        assert!(out.status.success(), "key {key}: {}", stderr(&out));
        let doc: Value = serde_json::from_str(&stdout(&out)).expect("JSON");
        assert_eq!(doc["signature"]["status"], "verified", "key {key}");
        assert_eq!(doc["region"], "MA");
        assert_eq!(doc["keys"][0]["report_type"], "CONFIRMED_TEST");
        assert_eq!(doc["keys"][0]["days_since_onset_of_symptoms"], -2);
        assert_eq!(doc["keys"][1]["report_type"], Value::Null);
        assert_eq!(doc["revised_keys"][0]["report_type"], "REVOKED");
    }

    // No key: unverified. A key labelled for another key id: unverified. Another key: invalid.
    let status = |extra: &[&str]| {
        let mut args = vec!["keys", "inspect", zip, "--format", "json"];
        args.extend_from_slice(extra);
        let out = authority(&args);
        assert!(out.status.success(), "{}", stderr(&out));
        serde_json::from_str::<Value>(&stdout(&out)).expect("JSON")["signature"]["status"].clone()
    };
    assert_eq!(status(&[]), "unverified");
    let other = ExportSigner::generate(signer.info.clone())
        .verification_key()
        .public_key_base64();
    assert_eq!(
        status(&["--public-key", &format!("999@{base64}")]),
        "unverified"
    );
    assert_eq!(status(&["--public-key", &other]), "invalid");
    let out = authority(&[
        "keys",
        "inspect",
        zip,
        "--public-key",
        &other,
        "--require-signature",
    ]);
    assert_eq!(out.status.code(), Some(65), "{}", stderr(&out));
}

/// Each failure has its sysexits code and a message naming what failed.
#[test]
fn failures_have_sysexits_codes() {
    let dir = tempfile::tempdir().expect("temp dir");
    let garbage = dir.path().join("garbage.zip");
    std::fs::write(&garbage, b"PK\x03\x04 certainly not a zip").expect("write");
    let garbage = garbage.to_str().expect("UTF-8 path");
    let real = testdata_str("gaen-export-110-keys.bin");
    let cases: [(&[&str], i32, &str); 6] = [
        (
            &["keys", "inspect", "/nonexistent/export.zip"],
            66,
            "/nonexistent/export.zip",
        ),
        (&["keys", "inspect", garbage], 65, "garbage.zip"),
        (
            &["keys", "inspect", &real, "--public-key", "bm90IGEga2V5"],
            78,
            "--public-key bm90IGEga2V5",
        ),
        (
            &["keys", "derive", "--tek", "abcd", "--enin", "1"],
            64,
            "--tek",
        ),
        (
            &[
                "keys",
                "derive",
                "--tek",
                "75c734c6dd1a782de7a965da5eb93125",
                "--enin",
                "4294967295",
                "--count",
                "2",
            ],
            64,
            "--enin",
        ),
        (&["keys", "frobnicate"], 64, "frobnicate"),
    ];
    for (args, code, needle) in cases {
        let out = authority(args);
        assert_eq!(out.status.code(), Some(code), "{args:?}: {}", stderr(&out));
        assert!(
            stderr(&out).contains(needle),
            "{args:?}: stderr {:?} should name {needle}",
            stderr(&out)
        );
    }
}

/// Every command has `--help` (exit 0, text on stdout), and `--version` works.
#[test]
fn every_command_has_help() {
    for args in [
        &["--help"][..],
        &["keys", "--help"],
        &["keys", "inspect", "--help"],
        &["keys", "derive", "--help"],
        &["--version"],
    ] {
        let out = authority(args);
        assert!(out.status.success(), "{args:?}");
        assert!(!stdout(&out).is_empty(), "{args:?}");
    }
    let out = Command::new(env!("CARGO_BIN_EXE_venuetrace-gateway"))
        .arg("--help")
        .output()
        .expect("gateway runs");
    assert!(out.status.success());
}

/// `venuetrace-gateway decode` splits 0xFD6F service data into RPI and AEM, and rejects other
/// lengths as malformed (exit 65), as the scanner will.
#[test]
fn gateway_decode() {
    let gateway = |arg: &str| {
        Command::new(env!("CARGO_BIN_EXE_venuetrace-gateway"))
            .args(["decode", arg])
            .output()
            .expect("gateway runs")
    };
    let out = gateway("8be6cd371c5c891604bfbe49df84509672033874");
    assert!(out.status.success());
    assert_eq!(
        stdout(&out),
        "rpi 8be6cd371c5c891604bfbe49df845096\naem 72033874\n"
    );
    let out = gateway("8be6cd371c5c891604bfbe49df845096720338");
    assert_eq!(out.status.code(), Some(65));
    assert!(stderr(&out).contains("19 bytes, expected 20"));
    assert_eq!(gateway("xyz").status.code(), Some(64));
}
