//! `venuetrace-authority keys …` and `bluetrace …` through the real binary: the output
//! contracts operators and acceptance checks rely on (README.md), the sysexits codes of each
//! failure, the BlueTrace privacy rules (contacts identified only when enabled, each use
//! audited first), retention, and the store's migration from schema version 1. The
//! store-backed commands run on the store `VENUETRACE_TEST_STORE` selects
//! (tests/common/store.rs); the migration test is about an SQLite file and stays on SQLite.

mod common;
use common::store::TestStore;
use common::tempid_ref;

use serde_json::Value;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::OnceLock;
use venuetrace::aggregate::{Counters, MinuteRssi, TempIdSighting};
use venuetrace::authority::store::{SqliteStore, Store};
use venuetrace::batch::{Batch, BatchId, GatewayId};
use venuetrace::bluetrace::TempId;
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
        &["bluetrace", "--help"],
        &["bluetrace", "cases", "add", "--help"],
        &["bluetrace", "contacts", "--help"],
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

// ---------------------------------------------------------------------------------------------
// BlueTrace.

/// 2026-11-29T00:00Z.
const DAY_S: i64 = 1_795_910_400;

fn at(hour: i64, minute: i64) -> i64 {
    DAY_S + hour * 3600 + minute * 60
}

/// The key TempIDs are issued with in these tests (base64 of 32 bytes).
fn key_b64() -> String {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD.encode([0x5Au8; 32])
}

/// The people of the scenario: UIDs and TempIDs made by the reference implementation once per
/// test process.
struct People {
    uid: BTreeMap<&'static str, String>,
    tempid: BTreeMap<&'static str, TempId>,
}

fn people() -> &'static People {
    static PEOPLE: OnceLock<People> = OnceLock::new();
    PEOPLE.get_or_init(|| {
        let other_key = {
            use base64::Engine;
            base64::engine::general_purpose::STANDARD.encode([0x77u8; 32])
        };
        let key = key_b64();
        let (valid_from, valid_to) = (at(9, 0) - 60, at(11, 0));
        // name, key, validity
        let specs: [(&str, &str, i64, i64); 9] = [
            ("case", &key, valid_from, valid_to),
            ("alice", &key, valid_from, valid_to),
            ("bob", &key, at(8, 0), at(8, 15)), // expired when read: a replay
            ("carol", &key, at(12, 0), at(12, 15)), // not valid yet when read: a replay
            ("dave", &other_key, valid_from, valid_to), // another key
            ("erin", &key, valid_from, valid_to), // read with organisation SG_MOH
            ("frank", &key, valid_from, valid_to), // at the bus station
            ("grace", &key, valid_from, valid_to), // at the souk before the case
            ("henry", &key, valid_from, valid_to), // never read: his phone did not answer
        ];
        let mut people = People {
            uid: BTreeMap::new(),
            tempid: BTreeMap::new(),
        };
        for (name, key, from, to) in specs {
            let uid = tempid_ref(&["uid", name]);
            let text = tempid_ref(&["encrypt", key, &uid, &from.to_string(), &to.to_string()]);
            people
                .tempid
                .insert(name, TempId::from_base64(&text).expect("a TempID"));
            people.uid.insert(name, uid);
        }
        people
    })
}

/// Who was read where: (person, gateway, organisation, first and last minute of the day, every
/// `step` minutes, RSSI).
type Reads = (
    &'static str,
    &'static str,
    &'static str,
    (i64, i64),
    i64,
    i8,
);
const READS: &[Reads] = &[
    ("case", "gw-souk", "MAR", (604, 628), 2, -70),
    ("alice", "gw-souk", "MAR", (620, 640), 2, -80),
    ("bob", "gw-souk", "MAR", (620, 622), 2, -60),
    ("carol", "gw-souk", "MAR", (624, 624), 2, -60),
    ("dave", "gw-souk", "MAR", (620, 620), 2, -60),
    ("erin", "gw-souk", "SG_MOH", (622, 622), 2, -60),
    ("frank", "gw-bus", "MAR", (610, 620), 2, -60),
    ("grace", "gw-souk", "MAR", (580, 590), 2, -60),
];

/// Stores the scenario's batches: one per gateway and 10-minute window, built directly (the
/// ingest path is tests/authority_ingest.rs's). Alice is loudest at 10:30 (−61 dBm); the
/// souk's gateway is enrolled with a +3 dB calibration.
fn store_scenario(store: &mut dyn Store) {
    let p = people();
    store
        .add_gateway("gw-souk", "souk-1", "market", [1; 32], None, 3, 0)
        .expect("enroll");
    store
        .add_gateway("gw-bus", "bus-1", "bus", [2; 32], None, 0, 0)
        .expect("enroll");
    type Window = BTreeMap<TempId, (&'static str, Vec<MinuteRssi>)>;
    let mut batches: BTreeMap<(&str, u32), Window> = BTreeMap::new();
    for &(name, gateway, org, (first, last), step, rssi) in READS {
        for minute in (first..=last).step_by(step as usize) {
            let unix_minute = DAY_S / 60 + minute;
            let window = (unix_minute / 10) as u32;
            let rssi = if name == "alice" && minute == 630 {
                -61
            } else {
                rssi
            };
            batches
                .entry((gateway, window))
                .or_default()
                .entry(p.tempid[name])
                .or_insert((org, Vec::new()))
                .1
                .push(MinuteRssi {
                    minute: (unix_minute % 10) as u8,
                    count: 1,
                    min: rssi,
                    mean: rssi,
                    max: rssi,
                });
        }
    }
    let mut sequence = BTreeMap::new();
    for ((gateway, window), tempids) in batches {
        let enrolled = store.gateway(gateway).expect("read").expect("enrolled");
        let sequence = sequence.entry(gateway).or_insert(0u64);
        *sequence += 1;
        let tempids: Vec<TempIdSighting> = tempids
            .into_iter()
            .map(|(tempid, (org, minutes))| TempIdSighting {
                tempid,
                org: org.to_owned(),
                first_minute: minutes[0].minute,
                last_minute: minutes[minutes.len() - 1].minute,
                reads: minutes.len() as u32,
                minutes,
            })
            .collect();
        let batch = Batch {
            id: BatchId {
                gateway: GatewayId::new(gateway).expect("id"),
                sequence: *sequence,
            },
            venue: enrolled.venue.clone(),
            window_start: Enin(window),
            window_minutes: 10,
            closed_early: false,
            rssi_calibration_db: 0,
            counters: Counters {
                bluetrace_reads: tempids.iter().map(|t| u64::from(t.reads)).sum(),
                ..Counters::default()
            },
            sightings: Vec::new(),
            tempids,
        };
        store.store_batch(&batch, &enrolled, 0).expect("store");
    }
}

/// An authority set up for BlueTrace in a temporary directory: key file, configuration (UTC,
/// `identify_contacts` as given, the audit log where given) and the scenario's store.
struct Bt {
    // Dropped before the directory.
    store: TestStore,
    dir: tempfile::TempDir,
    config: PathBuf,
}

impl Bt {
    fn new(identify_contacts: bool, audit_log: &str) -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        std::fs::write(dir.path().join("tempid.key"), key_b64() + "\n").expect("key file");
        let store = TestStore::new(dir.path());
        let config = dir.path().join("authority.toml");
        std::fs::write(
            &config,
            format!(
                "[authority]\nstate_dir = \"{}\"\ndatabase = \"{}\"\ntimezone = \"UTC\"\n\
                 [bluetrace]\nkey_files = [\"tempid.key\"]\nidentify_contacts = \
                 {identify_contacts}\naudit_log = \"{audit_log}\"\n",
                dir.path().display(),
                store.database,
            ),
        )
        .expect("configuration");
        store_scenario(&mut *store.open());
        Self { store, dir, config }
    }

    /// Runs `venuetrace-authority ARGS -c CONFIG` with only `env` in the environment.
    fn run(&self, args: &[&str], env: &[(&str, &str)]) -> Output {
        Command::new(env!("CARGO_BIN_EXE_venuetrace-authority"))
            .args(args)
            .arg("-c")
            .arg(&self.config)
            .env_clear()
            .envs(env.iter().copied())
            .output()
            .expect("the venuetrace-authority binary runs")
    }

    fn ok(&self, args: &[&str]) -> String {
        let out = self.run(args, &[]);
        assert!(out.status.success(), "{args:?}: {}", stderr(&out));
        stdout(&out)
    }

    fn json(&self, args: &[&str]) -> Value {
        serde_json::from_str(&self.ok(args)).expect("JSON")
    }

    /// The contact queries and their results recorded in the store.
    fn contact_queries(&self) -> (u64, u64) {
        let counts = self.store.open().bluetrace_counts().expect("counts");
        (counts.contact_queries, counts.contact_results)
    }

    /// The `basis` of every stored contact result, read straight from the store's table.
    fn stored_bases(&self) -> Vec<String> {
        const SQL: &str = "SELECT basis FROM contact_result ORDER BY basis";
        if self.store.is_postgres() {
            let mut client =
                postgres::Client::connect(&self.store.database, postgres::NoTls).expect("connect");
            let rows = client.query(SQL, &[]).expect("query");
            rows.iter().map(|r| r.get(0)).collect()
        } else {
            let conn = rusqlite::Connection::open(&self.store.database).expect("open");
            let mut stmt = conn.prepare(SQL).expect("prepare");
            stmt.query_map([], |r| r.get(0))
                .expect("query")
                .map(|r| r.expect("row"))
                .collect()
        }
    }

    fn add_case(&self) -> String {
        self.ok(&[
            "bluetrace",
            "cases",
            "add",
            &people().uid["case"],
            "--from",
            "2026-11-29T09:00",
            "--to",
            "2026-11-29T12:00",
            "--label",
            "file 17",
        ])
    }
}

const CONTACTS_PERIOD: [&str; 4] = ["--from", "2026-11-29T09:00", "--to", "2026-11-29T12:00"];

fn contacts_args<'a>(uid: &'a str, extra: &[&'a str]) -> Vec<&'a str> {
    let mut args = vec!["bluetrace", "contacts", "--uid", uid];
    args.extend(CONTACTS_PERIOD);
    args.extend_from_slice(extra);
    args
}

/// Registering a case makes `exposures` show its venue-hour side by side with GAEN's columns
/// (which keep their order; BlueTrace's come last, counts only, in table, JSON and CSV);
/// `match` recomputes and says what it used; `cases list` shows it; removing it empties the
/// venue-hours. Bad UIDs and periods are usage errors, an unknown case a data error.
#[test]
fn bluetrace_cases_and_exposures() {
    let bt = Bt::new(false, "bluetrace-audit.jsonl");
    let p = people();
    let added = bt.add_case();
    assert!(
        added.starts_with(&format!(
            "registered case {} from 2026-11-29T09:00+00:00 to 2026-11-29T12:00+00:00\n",
            p.uid["case"]
        )),
        "{added}"
    );
    assert!(
        added.contains(
            "bluetrace: 1 cases present in 1 venue-hours (14 TempID sightings read: 10 used, 1 \
             undecryptable, 1 of other organisations, 2 replays)"
        ),
        "{added}"
    );

    let rows = bt.json(&["exposures", "--format", "json"]);
    assert_eq!(
        rows,
        serde_json::json!([{
            "hour": "2026-11-29T10:00+00:00",
            "hour_start_unix_s": at(10, 0),
            "venue": "souk-1",
            "kind": "market",
            "exposure_events": 0,
            "infectious_keys": 0,
            "exposure_minutes": 0,
            "max_score": 0.0,
            "total_score": 0.0,
            "co_present_visitors": 0,
            "bt_cases": 1,
            "bt_contacts": 1,
        }]),
        "the case and alice (grace left before, frank was elsewhere, the rest not used)"
    );
    let keys: Vec<&String> = rows[0].as_object().expect("object").keys().collect();
    assert_eq!(keys.last().map(|k| k.as_str()), Some("bt_contacts"));
    let csv = bt.ok(&["exposures", "--format", "csv"]);
    assert_eq!(
        csv,
        "hour,venue,kind,events,infectious_keys,exposure_min,max_score,total_score,co_present,\
         bt_cases,bt_contacts\r\n2026-11-29T10:00+00:00,souk-1,market,0,0,0,0,0,0,1,1\r\n"
    );
    let table = bt.ok(&["exposures", "--venue", "souk-1", "--min-score", "50"]);
    assert!(
        table
            .lines()
            .next()
            .expect("header")
            .ends_with("co_present  bt_cases  bt_contacts")
    );
    assert_eq!(
        table.lines().count(),
        2,
        "BlueTrace hours whatever --min-score: {table}"
    );
    assert_eq!(bt.ok(&["exposures", "--venue", "bus-1"]).lines().count(), 1);
    // Nothing anywhere names a phone.
    for name in ["case", "alice"] {
        assert!(!csv.contains(&p.uid[name]) && !table.contains(&p.uid[name]));
    }

    let matched = bt.ok(&["match"]);
    let lines: Vec<&str> = matched.lines().collect();
    assert!(lines[0].starts_with("matched "), "{matched}");
    assert!(
        lines[1].starts_with("bluetrace: 1 cases present in 1 venue-hours"),
        "{matched}"
    );

    let cases = bt.json(&["bluetrace", "cases", "list", "--format", "json"]);
    assert_eq!(cases.as_array().expect("array").len(), 1);
    assert_eq!(cases[0]["uid"], p.uid["case"].as_str());
    assert_eq!(cases[0]["from_unix_s"], at(9, 0));
    assert_eq!(cases[0]["to"], "2026-11-29T12:00+00:00");
    assert_eq!(cases[0]["label"], "file 17");
    let again = bt.add_case();
    assert!(again.starts_with("updated case"), "{again}");

    let removed = bt.ok(&["bluetrace", "cases", "remove", &p.uid["case"]]);
    assert!(removed.starts_with("removed case"), "{removed}");
    assert_eq!(
        bt.json(&["exposures", "--format", "json"]),
        serde_json::json!([])
    );
    assert_eq!(
        bt.ok(&["bluetrace", "cases", "list", "--format", "csv"]),
        "uid,from,to,label,added,encounters\r\n"
    );

    for (args, code, needle) in [
        (
            vec![
                "bluetrace",
                "cases",
                "add",
                "not-a-uid",
                "--from",
                "2026-11-29",
                "--to",
                "2026-11-30",
            ],
            64,
            "28 characters of base64",
        ),
        (
            vec![
                "bluetrace",
                "cases",
                "add",
                &p.uid["case"],
                "--from",
                "2026-11-30",
                "--to",
                "2026-11-29",
            ],
            64,
            "--from must be before --to",
        ),
        (
            vec![
                "bluetrace",
                "cases",
                "add",
                &p.uid["case"],
                "--from",
                "yesterday",
                "--to",
                "2026-11-29",
            ],
            64,
            "--from \"yesterday\"",
        ),
        (
            vec!["bluetrace", "cases", "remove", &p.uid["alice"]],
            65,
            "no registered case",
        ),
    ] {
        let out = bt.run(&args, &[]);
        assert_eq!(out.status.code(), Some(code), "{args:?}: {}", stderr(&out));
        assert!(stderr(&out).contains(needle), "{args:?}: {}", stderr(&out));
    }
}

/// With `bluetrace.identify_contacts` off (the default), `bluetrace contacts` is refused with
/// exit 77 (EX_NOPERM), naming the setting and the configuration file; nothing is printed,
/// audited or recorded.
#[test]
fn contacts_refused_when_disabled() {
    let bt = Bt::new(false, "bluetrace-audit.jsonl");
    let out = bt.run(
        &contacts_args(&people().uid["case"], &[]),
        &[("USER", "alice")],
    );
    assert_eq!(out.status.code(), Some(77), "{}", stderr(&out));
    assert!(out.stdout.is_empty(), "{}", stdout(&out));
    let err = stderr(&out);
    assert!(
        err.contains("bluetrace.identify_contacts")
            && err.contains(&bt.config.display().to_string()),
        "{err}"
    );
    assert!(
        !bt.dir.path().join("bluetrace-audit.jsonl").exists(),
        "no audit line"
    );
    assert_eq!(bt.contact_queries(), (0, 0));

    // Enabled but without a key: refused as a configuration problem (78), nothing audited;
    // the other commands say why the counts stay 0.
    let no_keys = [
        ("VENUETRACE_AUTHORITY__BLUETRACE__IDENTIFY_CONTACTS", "true"),
        ("VENUETRACE_AUTHORITY__BLUETRACE__KEY_FILES", ""),
    ];
    let out = bt.run(&contacts_args(&people().uid["case"], &[]), &no_keys);
    assert_eq!(out.status.code(), Some(78), "{}", stderr(&out));
    assert!(out.stdout.is_empty() && stderr(&out).contains("bluetrace.key_files is empty"));
    assert!(
        !bt.dir.path().join("bluetrace-audit.jsonl").exists(),
        "no audit line"
    );
    let mut add = vec!["bluetrace", "cases", "add", &people().uid["case"]];
    add.extend(CONTACTS_PERIOD);
    let out = bt.run(&add, &no_keys);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(
        stdout(&out).contains("bluetrace.key_files is empty"),
        "{}",
        stdout(&out)
    );
    let out = bt.run(&["exposures"], &no_keys);
    assert!(
        stderr(&out).contains("TempIDs are stored, not decrypted"),
        "{}",
        stderr(&out)
    );
    assert_eq!(
        stdout(&out).lines().count(),
        1,
        "no venue-hour: {}",
        stdout(&out)
    );
}

/// Enabled: the contacts are the people whose presence overlapped the case's at the same
/// venue (alice: 13 minutes, loudest at −61 + 3 dB calibration), not those read elsewhere, or
/// before, nor replayed TempIDs (expired or not yet valid), another key's or another
/// organisation's — those are counted on stderr. Each use appends one JSON line to the audit
/// log before printing (an earlier line stays intact; a new log is created 0600) and records
/// the query and its results in the store.
#[test]
fn contacts_identified_and_audited() {
    let bt = Bt::new(true, "audit/bt.jsonl");
    let p = people();
    let audit = bt.dir.path().join("audit/bt.jsonl");
    std::fs::create_dir(bt.dir.path().join("audit")).expect("mkdir");

    // First use: a new log, mode 0600, operator from $SUDO_USER.
    let out = bt.run(
        &contacts_args(&p.uid["case"], &["--format", "json"]),
        &[("USER", "venuetrace-authority"), ("SUDO_USER", "nadia")],
    );
    assert!(out.status.success(), "{}", stderr(&out));
    let rows: Value = serde_json::from_str(&stdout(&out)).expect("JSON");
    assert_eq!(
        rows,
        serde_json::json!([{
            "venue": "souk-1",
            "case_first_seen": "2026-11-29T10:04+00:00",
            "case_first_seen_unix_s": at(10, 4),
            "case_last_seen": "2026-11-29T10:28+00:00",
            "case_last_seen_unix_s": at(10, 28),
            "contact_uid": p.uid["alice"],
            "contact_first_seen": "2026-11-29T10:20+00:00",
            "contact_first_seen_unix_s": at(10, 20),
            "contact_last_seen": "2026-11-29T10:40+00:00",
            "contact_last_seen_unix_s": at(10, 40),
            "overlap_minutes": 13,
            "max_rssi_dbm": -58,
            "basis": "read",
        }])
    );
    let err = stderr(&out);
    assert!(
        err.contains(
            "1 contacts; 14 TempID sightings read, 10 used; not used: 1 undecryptable, 1 of \
             other organisations, 2 replays"
        ),
        "{err}"
    );
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(&audit)
        .expect("audit log")
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o600);
    let first = std::fs::read_to_string(&audit).expect("read");
    assert_eq!(first.lines().count(), 1);

    // Second use, table format, --operator: appended after the first line, which is intact.
    let out = bt.run(
        &contacts_args(&p.uid["case"], &["--operator", "team-3"]),
        &[("USER", "venuetrace-authority")],
    );
    assert!(out.status.success(), "{}", stderr(&out));
    let table = stdout(&out);
    assert!(
        table.starts_with("venue   case_first              case_last               contact_uid"),
        "{table}"
    );
    assert!(
        table.contains(&p.uid["alice"]) && table.contains("  13  "),
        "{table}"
    );
    // A case nobody met: zero results, still audited.
    let out = bt.run(&contacts_args(&p.uid["frank"], &[]), &[("USER", "svc")]);
    assert!(out.status.success(), "{}", stderr(&out));

    let log = std::fs::read_to_string(&audit).expect("read");
    assert!(log.starts_with(&first), "earlier lines intact");
    let lines: Vec<Value> = log
        .lines()
        .map(|l| serde_json::from_str(l).expect("one JSON object per line"))
        .collect();
    assert_eq!(lines.len(), 3);
    assert_eq!(lines[0]["operator"], "nadia");
    assert_eq!(lines[1]["operator"], "team-3");
    assert_eq!(lines[2]["operator"], "svc");
    assert_eq!(lines[0]["case_uid"], p.uid["case"].as_str());
    assert_eq!(lines[2]["case_uid"], p.uid["frank"].as_str());
    assert_eq!(
        (lines[0]["results"].clone(), lines[2]["results"].clone()),
        (1.into(), 0.into())
    );
    assert_eq!(lines[0]["from_unix_s"], at(9, 0));
    assert_eq!(lines[0]["to"], "2026-11-29T12:00+00:00");
    // The store as the authority shows it: the SQLite path, or the redacted URL.
    assert_eq!(lines[0]["database"], bt.store.display());
    assert!(lines[0]["time"].as_str().expect("time").ends_with('Z'));
    assert_eq!(bt.contact_queries(), (3, 2));
    assert_eq!(bt.stored_bases(), ["read"; 2]);

    // A log that exists already (made by the operator, e.g. with chattr +a) is appended to.
    std::fs::write(&audit, "{\"earlier\":true}\n").expect("rewrite for the test");
    let out = bt.run(&contacts_args(&p.uid["case"], &[]), &[("USER", "svc")]);
    assert!(out.status.success(), "{}", stderr(&out));
    let log = std::fs::read_to_string(&audit).expect("read");
    assert!(
        log.starts_with("{\"earlier\":true}\n") && log.lines().count() == 2,
        "{log}"
    );
}

/// Henry's uploaded encounter list (in `bt`'s directory), and its bytes: he met frank at the
/// bus station at 10:15 and alice at the souk at 10:30 (both read there then), grace at 10:30
/// (read at 09:40–09:50 only), and bob (a replayed TempID), dave (another key) and erin
/// (another organisation); alice again at 08:30 (before the period); one record has no TempID.
fn henry_upload(bt: &Bt) -> (PathBuf, Vec<u8>) {
    let p = people();
    let ms = |s: i64| s * 1000;
    let record = |name: &str, at_s: i64, org: &str| {
        serde_json::json!({
            "timestamp": ms(at_s), "msg": p.tempid[name].to_base64(), "org": org,
            "modelC": "SM-A125F", "modelP": "Redmi Note 8", "rssi": -71, "txPower": 7, "v": 2,
        })
    };
    let upload = serde_json::json!({
        "token": "opaque upload token",
        "events": [],
        "records": [
            record("frank", at(10, 15) + 20, "MAR"),
            record("alice", at(10, 30), "MAR"),
            record("grace", at(10, 30), "MAR"),  // read at 09:40-09:50 only: places nothing
            record("bob", at(10, 30), "MAR"),    // valid 08:00-08:15: a replay
            record("dave", at(10, 30), "MAR"),   // another key
            record("erin", at(10, 30), "SG_MOH"),
            record("alice", at(8, 30), "MAR"),   // before the period
            {"timestamp": ms(at(10, 31)), "org": "MAR"},
        ],
    });
    let file = bt.dir.path().join("henry-upload.json");
    let bytes = serde_json::to_vec_pretty(&upload).expect("JSON");
    std::fs::write(&file, &bytes).expect("write");
    (file, bytes)
}

/// A case registered with its encounter list counts in the venue report where the list places
/// it: henry, never read, is a case in the souk's and the bus station's 10:00 hours, with the
/// people met there as contacts. `cases add` keeps the records within the period (encrypted,
/// as uploaded) and says so; `match` counts how they were decided; `cases list` shows how many
/// a case has; `bluetrace contacts` uses the stored list when given no file; a narrower period
/// trims the list; a list for several UIDs is a usage error; removing the case removes its
/// list.
#[test]
fn case_encounter_list_counts_in_venue_hours() {
    let bt = Bt::new(true, "bt-audit.jsonl");
    let p = people();
    let (file, _) = henry_upload(&bt);
    let path = file.to_str().expect("UTF-8");
    let add = |uids: &[&str]| {
        let mut args = vec!["bluetrace", "cases", "add"];
        args.extend_from_slice(uids);
        args.extend(["--from", "2026-11-29T09:00", "--to", "2026-11-29T12:00"]);
        args.extend(["--encounters", path]);
        bt.run(&args, &[])
    };
    let out = add(&[&p.uid["henry"]]);
    assert!(out.status.success(), "{}", stderr(&out));
    let said = stdout(&out);
    assert!(
        said.contains(&format!(
            "encounter list {path} ({}): 6 records kept (within the period) of 8, 1 malformed",
            &hex::encode({
                use sha2::Digest;
                sha2::Sha256::digest(std::fs::read(&file).expect("read"))
            })[..16]
        )),
        "{said}"
    );
    assert!(
        said.contains(
            "cases' encounter records: 3 used (2 placed a case), 1 undecryptable, 1 of other \
             organisations, 1 replays"
        ),
        "{said}"
    );
    let rows = bt.json(&["exposures", "--format", "json"]);
    let hours: Vec<(&str, &str, u64, u64)> = rows
        .as_array()
        .expect("array")
        .iter()
        .map(|r| {
            (
                r["venue"].as_str().expect("venue"),
                r["hour"].as_str().expect("hour"),
                r["bt_cases"].as_u64().expect("cases"),
                r["bt_contacts"].as_u64().expect("contacts"),
            )
        })
        .collect();
    assert_eq!(
        hours,
        [
            ("bus-1", "2026-11-29T10:00+00:00", 1, 1),
            ("souk-1", "2026-11-29T10:00+00:00", 1, 2),
        ]
    );
    let listed = bt.json(&["bluetrace", "cases", "list", "--format", "json"]);
    assert_eq!(listed[0]["encounters"], 6);
    assert!(
        bt.ok(&["match"])
            .contains("cases' encounter records: 3 used")
    );

    // `bluetrace contacts` without a file uses the stored list, and says so.
    let out = bt.run(
        &contacts_args(&p.uid["henry"], &["--format", "json"]),
        &[("USER", "nadia")],
    );
    assert!(out.status.success(), "{}", stderr(&out));
    let rows: Value = serde_json::from_str(&stdout(&out)).expect("JSON");
    assert_eq!(rows.as_array().expect("array").len(), 3);
    assert!(
        stderr(&out).contains(
            "note: the case's stored encounter list: 6 records in the period; 3 used, 2 placed"
        ),
        "{}",
        stderr(&out)
    );
    let audit = std::fs::read_to_string(bt.dir.path().join("bt-audit.jsonl")).expect("audit");
    let line: Value = serde_json::from_str(audit.lines().last().expect("a line")).expect("JSON");
    assert_eq!(line["encounters"]["stored"], true);
    assert_eq!(line["encounters"]["records"], 6);
    assert_eq!(line["encounters"]["placed"], 2);

    // A narrower period keeps only the list's records within it.
    let said = bt.ok(&[
        "bluetrace",
        "cases",
        "add",
        &p.uid["henry"],
        "--from",
        "2026-11-29T10:20",
        "--to",
        "2026-11-29T12:00",
    ]);
    assert!(
        said.contains(&format!(
            "encounter list of {}: 1 records outside the new period dropped, 5 kept",
            p.uid["henry"]
        )),
        "{said}"
    );
    let listed = bt.json(&["bluetrace", "cases", "list", "--format", "json"]);
    assert_eq!(listed[0]["encounters"], 5);

    let out = add(&[&p.uid["henry"], &p.uid["case"]]);
    assert_eq!(out.status.code(), Some(64), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("--encounters is one case's list"),
        "{}",
        stderr(&out)
    );

    bt.ok(&["bluetrace", "cases", "remove", &p.uid["henry"]]);
    let counts = bt.store.open().bluetrace_counts().expect("counts");
    assert_eq!(
        (counts.cases, counts.case_encounters, counts.hours),
        (0, 0, 0)
    );
}

/// Henry's phone was never read by a gateway, but his uploaded encounter list places him:
/// he met frank at the bus station at 10:15 and alice at the souk at 10:30, so frank, alice and
/// the case (at the souk until 10:28, widened to 10:31) are his contacts, on the basis of an
/// encounter. The list's records are decided like sightings (another key, another
/// organisation, a TempID outside its validity, outside the period, malformed: counted on
/// stderr); someone met where no gateway read them places nothing. The audit line names the
/// file and its SHA-256. A missing file (66) or one that is not a list (65) is refused before
/// anything is audited or recorded.
#[test]
fn contacts_placed_by_encounter_list() {
    let bt = Bt::new(true, "bt-audit.jsonl");
    let p = people();
    let (file, bytes) = henry_upload(&bt);
    let path = file.to_str().expect("UTF-8");

    let out = bt.run(
        &contacts_args(&p.uid["henry"], &["--encounters", path, "--format", "json"]),
        &[("USER", "nadia")],
    );
    assert!(out.status.success(), "{}", stderr(&out));
    let rows: Value = serde_json::from_str(&stdout(&out)).expect("JSON");
    let found: Vec<(&str, &str, &str, &str, u64, i64, &str)> = rows
        .as_array()
        .expect("array")
        .iter()
        .map(|r| {
            (
                r["venue"].as_str().expect("venue"),
                r["contact_uid"].as_str().expect("uid"),
                r["case_first_seen"].as_str().expect("time"),
                r["contact_first_seen"].as_str().expect("time"),
                r["overlap_minutes"].as_u64().expect("minutes"),
                r["max_rssi_dbm"].as_i64().expect("rssi"),
                r["basis"].as_str().expect("basis"),
            )
        })
        .collect();
    assert_eq!(
        found,
        [
            (
                "souk-1",
                p.uid["case"].as_str(),
                "2026-11-29T10:30+00:00",
                "2026-11-29T10:04+00:00",
                3,
                -67,
                "encounter"
            ),
            (
                "souk-1",
                p.uid["alice"].as_str(),
                "2026-11-29T10:30+00:00",
                "2026-11-29T10:20+00:00",
                5,
                -58,
                "encounter"
            ),
            (
                "bus-1",
                p.uid["frank"].as_str(),
                "2026-11-29T10:15+00:00",
                "2026-11-29T10:10+00:00",
                5,
                -60,
                "encounter"
            ),
        ]
    );
    let err = stderr(&out);
    assert!(
        err.contains(&format!(
            "note: encounter list {path}: 8 records, 1 malformed (the first: record 8 of the \
             list, no \"msg\" (the other phone's TempID)), 1 outside the period; 3 used, 2 placed the \
             case at a venue; not used: 1 undecryptable, 1 of other organisations, 1 replays"
        )),
        "{err}"
    );
    // Without the list, henry has no contacts.
    let out = bt.run(&contacts_args(&p.uid["henry"], &[]), &[("USER", "nadia")]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(stdout(&out).lines().count(), 1, "{}", stdout(&out));

    let log = std::fs::read_to_string(bt.dir.path().join("bt-audit.jsonl")).expect("audit");
    let lines: Vec<Value> = log
        .lines()
        .map(|l| serde_json::from_str(l).expect("JSON line"))
        .collect();
    assert_eq!(lines.len(), 2);
    let sha256 = {
        use sha2::Digest;
        hex::encode(sha2::Sha256::digest(&bytes))
    };
    assert_eq!(
        lines[0]["encounters"],
        serde_json::json!({
            "file": path, "sha256": sha256, "records": 8, "malformed": 1, "outside_period": 1,
            "used": 3, "undecryptable": 1, "wrong_org": 1, "replays": 1, "placed": 2,
        })
    );
    assert_eq!(lines[0]["results"], 3);
    assert!(lines[1].get("encounters").is_none());
    assert_eq!(bt.contact_queries(), (2, 3));
    assert_eq!(bt.stored_bases(), ["encounter"; 3]);

    // Refused before anything is audited or recorded.
    let missing = bt.dir.path().join("nope.json");
    let out = bt.run(
        &contacts_args(
            &p.uid["henry"],
            &["--encounters", missing.to_str().expect("UTF-8")],
        ),
        &[("USER", "nadia")],
    );
    assert_eq!(out.status.code(), Some(66), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("cannot read the encounter list"),
        "{}",
        stderr(&out)
    );
    std::fs::write(&file, &bytes[..bytes.len() / 2]).expect("truncate");
    let out = bt.run(
        &contacts_args(&p.uid["henry"], &["--encounters", path]),
        &[("USER", "nadia")],
    );
    assert_eq!(out.status.code(), Some(65), "{}", stderr(&out));
    assert!(
        stderr(&out).contains(&format!(
            "encounter list {path}: not JSON: EOF while parsing"
        )),
        "{}",
        stderr(&out)
    );
    assert!(out.stdout.is_empty());
    let log = std::fs::read_to_string(bt.dir.path().join("bt-audit.jsonl")).expect("audit");
    assert_eq!(log.lines().count(), 2, "nothing audited");
    assert_eq!(bt.contact_queries(), (2, 3), "nothing recorded");
}

/// `bluetrace visits`: where a case was — the case read at the souk 10:04–10:28 (present
/// 10:02–10:31 with the margin, alice there too); henry, never read, placed by his encounter
/// list at the bus station (with frank) and the souk (with the case and alice). Gated and
/// audited like `contacts` (the audit line says which query), and not kept in the store.
#[test]
fn visits_of_a_case() {
    let bt = Bt::new(true, "bt-audit.jsonl");
    let p = people();
    let visits = |uid: &str, extra: &[&str]| -> Vec<(String, String, String, u64, String, u64)> {
        let mut args = vec!["bluetrace", "visits", "--uid", uid];
        args.extend(CONTACTS_PERIOD);
        args.extend_from_slice(extra);
        args.extend(["--format", "json"]);
        bt.json(&args)
            .as_array()
            .expect("array")
            .iter()
            .map(|v| {
                let text = |k: &str| v[k].as_str().expect(k).to_owned();
                (
                    text("venue"),
                    text("from"),
                    text("to"),
                    v["minutes"].as_u64().expect("minutes"),
                    text("basis"),
                    v["contacts"].as_u64().expect("contacts"),
                )
            })
            .collect()
    };
    let row = |venue: &str, from: &str, to: &str, minutes: u64, basis: &str, contacts: u64| {
        (
            venue.to_owned(),
            format!("2026-11-29T{from}+00:00"),
            format!("2026-11-29T{to}+00:00"),
            minutes,
            basis.to_owned(),
            contacts,
        )
    };
    assert_eq!(
        visits(&p.uid["case"], &[]),
        [row("souk-1", "10:02", "10:31", 29, "read", 1)]
    );
    let (file, _) = henry_upload(&bt);
    assert_eq!(
        visits(
            &p.uid["henry"],
            &["--encounters", file.to_str().expect("UTF-8")]
        ),
        [
            row("bus-1", "10:13", "10:18", 5, "encounter", 1),
            row("souk-1", "10:28", "10:33", 5, "encounter", 2),
        ]
    );
    let audit = std::fs::read_to_string(bt.dir.path().join("bt-audit.jsonl")).expect("audit");
    let queries: Vec<(String, u64)> = audit
        .lines()
        .map(|l| {
            let v: Value = serde_json::from_str(l).expect("JSON");
            (
                v["query"].as_str().expect("query").to_owned(),
                v["results"].as_u64().expect("results"),
            )
        })
        .collect();
    assert_eq!(
        queries,
        [("visits".to_owned(), 1), ("visits".to_owned(), 2)]
    );
    assert_eq!(bt.contact_queries(), (0, 0), "visits are not kept");

    let off = Bt::new(false, "bt-audit.jsonl");
    let mut args = vec!["bluetrace", "visits", "--uid", p.uid["case"].as_str()];
    args.extend(CONTACTS_PERIOD);
    let out = off.run(&args, &[]);
    assert_eq!(out.status.code(), Some(77), "{}", stderr(&out));
    assert!(stderr(&out).contains("bluetrace.identify_contacts"));
}

/// When the audit log cannot be written, `bluetrace contacts` is refused: a nonzero exit, the
/// reason on stderr, nothing on stdout, nothing recorded.
#[test]
fn contacts_refused_when_audit_log_unwritable() {
    let bt = Bt::new(true, "no-such-directory/audit.jsonl");
    let out = bt.run(
        &contacts_args(&people().uid["case"], &[]),
        &[("USER", "svc")],
    );
    assert_eq!(out.status.code(), Some(73), "{}", stderr(&out));
    assert!(out.stdout.is_empty(), "printed: {}", stdout(&out));
    assert!(
        stderr(&out).contains("refused: cannot write the audit log"),
        "{}",
        stderr(&out)
    );
    assert!(!stderr(&out).contains(&people().uid["alice"]));
    assert_eq!(bt.contact_queries(), (0, 0));
}

/// Retention: a purge removes the TempID sightings of windows before the cutoff (with their
/// batches), the BlueTrace venue-hours before it, the cases' encounter records before it, and
/// the cases (with their lists) and contact queries (with their results) whose period ended by
/// then; what is younger stays.
#[test]
fn retention_purge_removes_bluetrace_data() {
    let bt = Bt::new(true, "bluetrace-audit.jsonl");
    bt.add_case();
    let (file, _) = henry_upload(&bt);
    bt.ok(&[
        "bluetrace",
        "cases",
        "add",
        &people().uid["henry"],
        "--from",
        "2026-11-29T09:00",
        "--to",
        "2026-11-29T12:00",
        "--encounters",
        file.to_str().expect("UTF-8"),
    ]);
    bt.ok(&contacts_args(&people().uid["case"], &[]));
    let mut store = bt.store.open();
    let before = store.bluetrace_counts().expect("counts");
    assert_eq!(
        (
            before.tempid_sightings,
            before.cases,
            before.hours,
            before.contact_queries,
            before.contact_results,
            before.case_encounters
        ),
        (14, 2, 2, 1, 1, 6)
    );

    // 10:15: the 09:40, 09:50 and 10:00 windows and the 10:00 hours go; the cases, their
    // lists (10:15:20 and later) and the query (until 12:00) stay.
    let purged = store.purge(at(10, 15), at(10, 15)).expect("purge");
    assert_eq!(
        (
            purged.tempid_sightings,
            purged.bluetrace_cases,
            purged.contact_queries,
            purged.case_encounters
        ),
        (3, 0, 0, 0)
    );
    let mid = store.bluetrace_counts().expect("counts");
    assert_eq!(
        (
            mid.tempid_sightings,
            mid.cases,
            mid.hours,
            mid.contact_queries,
            mid.case_encounters
        ),
        (11, 2, 0, 1, 6)
    );
    // 10:20: the 10:10 window (the case at the souk, frank at the bus station) and henry's
    // encounter with frank at 10:15:20.
    let purged = store.purge(at(10, 20), at(10, 20)).expect("purge");
    assert_eq!((purged.tempid_sightings, purged.case_encounters), (2, 1));

    // 13:00: everything (henry's other records go with his case).
    let purged = store.purge(at(13, 0), at(13, 0)).expect("purge");
    assert_eq!(
        (
            purged.tempid_sightings,
            purged.bluetrace_cases,
            purged.contact_queries
        ),
        (9, 2, 1)
    );
    assert_eq!(
        store.bluetrace_counts().expect("counts"),
        Default::default()
    );
    drop(store);
    assert_eq!(
        bt.json(&["exposures", "--format", "json"]),
        serde_json::json!([])
    );
    assert_eq!(
        bt.json(&["bluetrace", "cases", "list", "--format", "json"]),
        serde_json::json!([])
    );
}

/// A store of schema version 1 (as deployed before BlueTrace) is migrated when a command
/// opens it: its venues, gateways, batches, sightings and venue-hours are kept, the BlueTrace
/// tables and batch columns exist (and version 3's contact basis), and it then takes batches with TempIDs. SQLite only, in
/// both passes of scripts/test: schema version 1 only ever existed as an SQLite file.
#[test]
fn migration_from_version_1() {
    let dir = tempfile::tempdir().expect("tempdir");
    let db = dir.path().join("old.sqlite");
    {
        let conn = rusqlite::Connection::open(&db).expect("create");
        conn.execute_batch(&format!(
            "{SCHEMA_V1} PRAGMA application_id = 1448362325; PRAGMA user_version = 1;
             INSERT INTO venue(id, name, kind) VALUES (1, 'souk-1', 'market');
             INSERT INTO gateway(id, venue_id, public_key, calibration_db, enrolled_ms)
               VALUES ('gw-old', 1, zeroblob(32), 0, 0);
             INSERT INTO batch(id, batch_id, gateway_id, sequence, venue_id, window_start_enin,
               window_minutes, closed_early, calibration_db, adverts, gaen, malformed, dropped, late,
               bluetrace_adverts, bluetrace_devices, unrelated, sightings, received_ms)
               VALUES (1, 'gw-old:1', 'gw-old', 1, 1, 2993244, 10, 0, 0, 5, 5, 0, 0, 0, 0, 0, 0, 1, 0);
             INSERT INTO sighting(batch, venue_id, window_start_enin, rpi, aem, minutes)
               VALUES (1, 1, 2993244, zeroblob(16), zeroblob(4), zeroblob(8));
             INSERT INTO venue_hour VALUES (1, {hour}, 2, 1, 12, 300.0, 450.0, 7);"
            ,
            hour = at(10, 0)
        ))
        .expect("a version 1 store");
    }
    let out = authority(&[
        "exposures",
        "--format",
        "json",
        "--database",
        db.to_str().expect("UTF-8"),
    ]);
    assert!(out.status.success(), "{}", stderr(&out));
    let rows: Value = serde_json::from_str(&stdout(&out)).expect("JSON");
    assert_eq!(rows.as_array().expect("array").len(), 1);
    assert_eq!(rows[0]["exposure_events"], 2);
    assert_eq!(rows[0]["co_present_visitors"], 7);
    assert_eq!(rows[0]["bt_cases"], 0);

    let conn = rusqlite::Connection::open(&db).expect("open");
    let version: i64 = conn
        .query_row("PRAGMA user_version", [], |r| r.get(0))
        .expect("version");
    assert_eq!(version, venuetrace::authority::store::SCHEMA_VERSION);
    for table in [
        "tempid_sighting",
        "bluetrace_case",
        "bluetrace_hour",
        "contact_query",
        "contact_result",
        "bluetrace_case_encounter",
    ] {
        let n: i64 = conn
            .query_row(&format!("SELECT count(*) FROM {table}"), [], |r| r.get(0))
            .unwrap_or_else(|e| panic!("{table}: {e}"));
        assert_eq!(n, 0, "{table}");
    }
    conn.prepare("SELECT basis FROM contact_result")
        .expect("version 3: contact results say what placed the case");
    let kept: (i64, i64, i64, i64) = conn
        .query_row(
            "SELECT (SELECT count(*) FROM sighting), (SELECT count(*) FROM gateway),
               (SELECT bluetrace_reads + bluetrace_reads_dropped + tempids FROM batch), (SELECT adverts FROM batch)",
            [],
            |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)),
        )
        .expect("kept");
    assert_eq!(kept, (1, 1, 0, 5));
    drop(conn);

    // Opening again changes nothing; the store takes BlueTrace data.
    let store = SqliteStore::open(&db).expect("reopen");
    assert_eq!(store.migrated_from(), None);
    drop(store);
    store_scenario(&mut SqliteStore::open(&db).expect("reopen"));
    let store = SqliteStore::open(&db).expect("reopen");
    assert_eq!(
        store.bluetrace_counts().expect("counts").tempid_sightings,
        14
    );
}

/// The store schema of version 1, as `src/authority/store.rs` created it until BlueTrace
/// support (commit 198dab4): deployed stores have it. Kept here, frozen, to build one.
const SCHEMA_V1: &str = "
CREATE TABLE venue (
  id INTEGER PRIMARY KEY,
  name TEXT NOT NULL UNIQUE,
  kind TEXT NOT NULL,
  location TEXT
) STRICT;
CREATE TABLE gateway (
  id TEXT PRIMARY KEY,
  venue_id INTEGER NOT NULL REFERENCES venue(id),
  public_key BLOB NOT NULL CHECK (length(public_key) = 32),
  label TEXT,
  calibration_db INTEGER NOT NULL DEFAULT 0,
  enrolled_ms INTEGER NOT NULL,
  revoked_ms INTEGER
) STRICT;
CREATE TABLE batch (
  id INTEGER PRIMARY KEY,
  batch_id TEXT NOT NULL UNIQUE,
  gateway_id TEXT NOT NULL REFERENCES gateway(id),
  sequence INTEGER NOT NULL,
  venue_id INTEGER NOT NULL REFERENCES venue(id),
  window_start_enin INTEGER NOT NULL,
  window_minutes INTEGER NOT NULL,
  closed_early INTEGER NOT NULL,
  calibration_db INTEGER NOT NULL,
  adverts INTEGER NOT NULL, gaen INTEGER NOT NULL, malformed INTEGER NOT NULL,
  dropped INTEGER NOT NULL, late INTEGER NOT NULL, bluetrace_adverts INTEGER NOT NULL,
  bluetrace_devices INTEGER NOT NULL, unrelated INTEGER NOT NULL,
  sightings INTEGER NOT NULL,
  received_ms INTEGER NOT NULL
) STRICT;
CREATE INDEX batch_window ON batch(window_start_enin);
CREATE TABLE sighting (
  batch INTEGER NOT NULL REFERENCES batch(id) ON DELETE CASCADE,
  venue_id INTEGER NOT NULL,
  window_start_enin INTEGER NOT NULL,
  rpi BLOB NOT NULL,
  aem BLOB NOT NULL,
  minutes BLOB NOT NULL
) STRICT;
CREATE INDEX sighting_window ON sighting(window_start_enin);
CREATE TABLE quarantine (
  id INTEGER PRIMARY KEY,
  received_ms INTEGER NOT NULL,
  topic TEXT NOT NULL,
  batch_id TEXT,
  reason TEXT NOT NULL,
  size INTEGER NOT NULL,
  sha256 TEXT NOT NULL
) STRICT;
CREATE TABLE diagnosis_key (
  id INTEGER PRIMARY KEY,
  key_data BLOB NOT NULL UNIQUE CHECK (length(key_data) = 16),
  rolling_start INTEGER NOT NULL,
  rolling_period INTEGER NOT NULL,
  transmission_risk_level INTEGER,
  report_type INTEGER,
  days_since_onset INTEGER,
  source TEXT NOT NULL,
  imported_ms INTEGER NOT NULL,
  revised_ms INTEGER
) STRICT;
CREATE TABLE exposure_event (
  key_id INTEGER NOT NULL REFERENCES diagnosis_key(id) ON DELETE CASCADE,
  venue_id INTEGER NOT NULL REFERENCES venue(id),
  start_s INTEGER NOT NULL,
  end_s INTEGER NOT NULL,
  score REAL NOT NULL,
  min_attenuation_db INTEGER NOT NULL,
  typical_attenuation_db INTEGER NOT NULL,
  minutes_immediate INTEGER NOT NULL, minutes_near INTEGER NOT NULL,
  minutes_medium INTEGER NOT NULL, minutes_other INTEGER NOT NULL,
  report_type INTEGER NOT NULL
) STRICT;
CREATE TABLE venue_hour (
  venue_id INTEGER NOT NULL REFERENCES venue(id),
  hour_start_s INTEGER NOT NULL,
  exposure_events INTEGER NOT NULL,
  infectious_keys INTEGER NOT NULL,
  exposure_minutes INTEGER NOT NULL,
  max_score REAL NOT NULL,
  total_score REAL NOT NULL,
  co_present INTEGER NOT NULL,
  PRIMARY KEY (venue_id, hour_start_s)
) STRICT;
CREATE INDEX exposure_event_start ON exposure_event(start_s);
CREATE TABLE match_state (
  id INTEGER PRIMARY KEY CHECK (id = 1),
  key_id INTEGER NOT NULL,
  batch_id INTEGER NOT NULL,
  revised_ms INTEGER NOT NULL
) STRICT;
";
