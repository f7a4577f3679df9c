//! Gateways and authority end to end, all real binaries, through a private Mosquitto: three
//! gateways simulate a city's venues (`--source sim`), the authority ingests their sealed
//! batches, a key server's signed export of the infected phones' TEKs is imported, and
//! `exposures` lists the venue-hours where those phones were — checked against the
//! simulation's ground truth. A second scenario does the same for Wiqaytna (BlueTrace): TempIDs
//! read by the gateways, decrypted by the authority, contacts of registered cases.
//! The authority's store is the one `VENUETRACE_TEST_STORE` selects (tests/common/store.rs).

mod common;

use common::mosquitto::Broker;
use common::process::{Killed, enroll_gateway, path, public_key, run, run_gateway_until_delivered};
use common::store::TestStore;
use std::collections::BTreeSet;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};
use venuetrace::bluetrace::{TempIdKey, Uid};
use venuetrace::crypto::{Enin, RollingPeriod, Tek};
use venuetrace::export::{
    DiagnosisKey, ExportContents, ExportSigner, ReportType, SignatureInfo, write_export_zip,
};
use venuetrace::output::iso_utc;
use venuetrace::sim::{City, GroundTruth, PhoneKind, PhoneTruth, SimConfig};

const AUTH: &str = env!("CARGO_BIN_EXE_venuetrace-authority");
const VENUES: [&str; 3] = ["supermarket-1", "souk-1", "bus-station-1"];

/// A city delivered: an authority configured and enrolled, its gateways' simulated days
/// ingested (the authority stopped again).
struct Delivered {
    // Dropped before the directory.
    _store: TestStore,
    dir: tempfile::TempDir,
    config: std::path::PathBuf,
}

impl Delivered {
    fn dir(&self) -> &Path {
        self.dir.path()
    }

    fn config(&self) -> &str {
        path(&self.config)
    }
}

/// Sets up an authority (`extra_authority_toml` appended to its configuration) and one
/// gateway per venue (`sim_toml` as their `[sim]` section plus `extra_gateway_toml`), enrolls
/// them, runs the authority's ingest while every gateway simulates its day and exits once all
/// is delivered, then stops the authority (checking SIGHUP does not stop it and SIGTERM does,
/// cleanly) and checks each gateway delivered `batches` batches.
fn deliver_city(
    broker: &Broker,
    venues: &[&str],
    extra_authority_toml: &str,
    sim_toml: &str,
    extra_gateway_toml: &str,
    batches: std::ops::RangeInclusive<u64>,
) -> Delivered {
    let dir = tempfile::tempdir().expect("tempdir");
    let d = dir.path();
    // Its store: the one `VENUETRACE_TEST_STORE` selects (tests/common/store.rs).
    let store = TestStore::new(d);

    // The authority: key pair and configuration.
    let auth_public = public_key(&run(
        AUTH,
        &[
            "keygen",
            "--key",
            path(&d.join("authority.key")),
            "--database",
            &store.database,
        ],
    ));
    let auth_config = d.join("authority.toml");
    std::fs::write(
        &auth_config,
        format!(
            "[authority]\nstate_dir = \"{dir}\"\nprivate_key = \"authority.key\"\ndatabase = \"{database}\"\ntimezone = \"UTC\"\n\
             [mqtt]\nhost = \"127.0.0.1\"\nport = {port}\n[keys]\nallow_unsigned = false\n{extra_authority_toml}",
            dir = d.display(),
            database = store.database,
            port = broker.port
        ),
    )
    .expect("authority.toml");
    let c = path(&auth_config);

    // The gateways, enrolled.
    for venue in venues {
        let gw_dir = d.join(venue);
        enroll_gateway(&gw_dir, &format!("gw-{venue}"), venue, &auth_config);
        std::fs::write(
            gw_dir.join("gateway.toml"),
            format!(
                "[gateway]\nid = \"gw-{venue}\"\nvenue = \"{venue}\"\nstate_dir = \"{dir}\"\n\
                 [authority]\npublic_key = \"{auth_public}\"\n[scan]\nsource = \"sim\"\n\
                 [sim]\n{sim_toml}\nspeed = 0.0\nground_truth = \"{truth}\"\n\
                 [mqtt]\nhost = \"127.0.0.1\"\nport = {port}\nresend_initial_seconds = 1\nresend_max_seconds = 2\n\
                 {extra_gateway_toml}",
                dir = gw_dir.display(),
                truth = gw_dir.join("truth.json").display(),
                port = broker.port
            ),
        )
        .expect("gateway.toml");
    }
    for list in ["venues", "gateways list"] {
        let mut args: Vec<&str> = list.split(' ').collect();
        args.extend(["--format", "json", "-c", c]);
        let listed: serde_json::Value = serde_json::from_str(&run(AUTH, &args)).expect("json");
        assert_eq!(
            listed.as_array().map(Vec::len),
            Some(venues.len()),
            "{list}"
        );
    }

    // Authority ingesting, gateways simulating their day and delivering everything. Its
    // stderr goes to a file, shown if it does not stop cleanly.
    let auth_log = d.join("authority.stderr");
    let authority = Killed(
        Command::new(AUTH)
            .args(["run", "-c", c])
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&auth_log).expect("authority.stderr"))
            .spawn()
            .expect("authority run"),
    );
    let gateways: Vec<Child> = venues
        .iter()
        .map(|venue| run_gateway_until_delivered(&d.join(venue).join("gateway.toml")))
        .collect();
    let deadline = Instant::now() + Duration::from_secs(120);
    for gateway in gateways {
        let out = gateway.wait_with_output().expect("gateway exits");
        assert!(
            out.status.success(),
            "gateway failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(Instant::now() < deadline, "gateways took over 120 s");
    }
    // SIGHUP (e.g. a log rotation script) does not stop the authority; SIGTERM does, cleanly.
    let mut authority = authority;
    let pid = authority.0.id().to_string();
    Command::new("kill")
        .args(["-HUP", &pid])
        .status()
        .expect("kill -HUP");
    std::thread::sleep(Duration::from_millis(300));
    assert!(
        authority.0.try_wait().expect("wait").is_none(),
        "SIGHUP stopped the authority"
    );
    Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .expect("kill -TERM");
    let status = authority.0.wait().expect("authority exits");
    assert!(
        status.success(),
        "authority after SIGTERM: {status}; its stderr:\n{}",
        std::fs::read_to_string(&auth_log).unwrap_or_default()
    );
    let status: serde_json::Value = serde_json::from_str(&run(
        AUTH,
        &["gateways", "status", "--format", "json", "-c", c],
    ))
    .expect("json");
    for g in status.as_array().expect("array") {
        let delivered = g["batches"].as_u64().expect("count");
        assert!(
            batches.contains(&delivered),
            "{delivered} batches from {}",
            g["id"]
        );
    }
    Delivered {
        _store: store,
        dir,
        config: auth_config,
    }
}

/// The whole product on one machine; see the module documentation.
#[test]
fn simulated_city_exposures_match_ground_truth() {
    let broker = Broker::start();
    // 4 hours = 24 windows, from the first advert heard (the day starts quiet) to the end.
    let city = deliver_city(
        &broker,
        &VENUES,
        "",
        "seed = 11\nphones = 400\nhours = 4.0",
        "",
        20..=24,
    );
    let (d, c) = (city.dir(), city.config());

    // The key server publishes the infected GAEN phones' keys, signed.
    let truth: GroundTruth =
        serde_json::from_slice(&std::fs::read(d.join("souk-1").join("truth.json")).expect("truth"))
            .expect("parses");
    let infected: Vec<_> = truth
        .phones
        .iter()
        .filter(|p| p.infected && p.kind == PhoneKind::Gaen)
        .collect();
    assert!(
        !infected.is_empty(),
        "the simulation has infected GAEN phones"
    );
    let keys: Vec<DiagnosisKey> = infected
        .iter()
        .flat_map(|p| &p.teks)
        .map(|t| DiagnosisKey {
            tek: Tek::from_hex(&t.key_data).expect("hex"),
            transmission_risk_level: Some(4),
            rolling_start: Enin(t.rolling_start_interval_number),
            rolling_period: RollingPeriod::new(i64::from(t.rolling_period)).expect("period"),
            report_type: Some(ReportType::ConfirmedTest),
            days_since_onset_of_symptoms: Some(1),
        })
        .collect();
    let info = SignatureInfo {
        verification_key_version: Some("v1".into()),
        verification_key_id: Some("604".into()),
        signature_algorithm: Some(venuetrace::export::ECDSA_P256_SHA256_OID.into()),
    };
    let signer = ExportSigner::generate(info.clone());
    let contents = ExportContents {
        region: "MA".into(),
        signature_infos: vec![info],
        keys,
        ..ExportContents::default()
    };
    std::fs::write(
        d.join("export.zip"),
        write_export_zip(&contents, &signer).expect("zip"),
    )
    .expect("write zip");
    std::fs::write(d.join("keyserver.pem"), signer.public_key_pem()).expect("pem");

    // Unsigned or wrongly keyed imports are refused; the signed one is imported and matched.
    let wrong = ExportSigner::generate(SignatureInfo::default());
    std::fs::write(d.join("other.pem"), wrong.public_key_pem()).expect("pem");
    let refused = Command::new(AUTH)
        .args([
            "keys",
            "import",
            path(&d.join("export.zip")),
            "--public-key",
            path(&d.join("other.pem")),
            "-c",
            c,
        ])
        .output()
        .expect("runs");
    assert_eq!(
        refused.status.code(),
        Some(65),
        "{}",
        String::from_utf8_lossy(&refused.stderr)
    );
    run(
        AUTH,
        &[
            "keys",
            "import",
            path(&d.join("export.zip")),
            "--public-key",
            path(&d.join("keyserver.pem")),
            "-c",
            c,
        ],
    );
    let again = run(
        AUTH,
        &[
            "keys",
            "import",
            path(&d.join("export.zip")),
            "--public-key",
            path(&d.join("keyserver.pem")),
            "--format",
            "json",
            "-c",
            c,
        ],
    );
    assert!(
        again.contains("\"new\": 0"),
        "import is idempotent: {again}"
    );

    // The health team's query against the ground truth.
    let report: serde_json::Value =
        serde_json::from_str(&run(AUTH, &["exposures", "--format", "json", "-c", c]))
            .expect("json");
    let found: BTreeSet<(String, i64)> = report
        .as_array()
        .expect("array")
        .iter()
        .map(|r| {
            (
                r["venue"].as_str().expect("venue").to_owned(),
                r["hour_start_unix_s"].as_i64().expect("hour"),
            )
        })
        .collect();
    let expected: BTreeSet<(String, i64)> = truth
        .exposed_venue_hours()
        .into_iter()
        .map(|h| (h.venue, h.hour_start_unix_s as i64))
        .collect();
    assert!(!expected.is_empty());
    let missed: Vec<_> = expected.difference(&found).collect();
    let extra: Vec<_> = found.difference(&expected).collect();
    assert!(
        missed.is_empty(),
        "exposed venue-hours not reported: {missed:?}"
    );
    let precision = (found.len() - extra.len()) as f64 / found.len() as f64;
    assert!(precision >= 0.95, "precision {precision}: extra {extra:?}");
    // Incremental matching (what `keys import` did) gives exactly what a full recompute gives;
    // a match with nothing new changes nothing.
    let full = run(AUTH, &["match", "--full", "-c", c]);
    assert!(full.starts_with("matched "), "{full}");
    let after_full: serde_json::Value =
        serde_json::from_str(&run(AUTH, &["exposures", "--format", "json", "-c", c]))
            .expect("json");
    assert_eq!(after_full, report, "incremental and full matching differ");
    let nothing = run(AUTH, &["match", "-c", c]);
    assert!(nothing.starts_with("matched 0 days"), "{nothing}");
    // CSV for spreadsheets, with the header.
    let csv = run(AUTH, &["exposures", "--format", "csv", "-c", c]);
    assert!(
        csv.starts_with("hour,venue,kind,events,infectious_keys"),
        "{csv}"
    );
}

/// Wiqaytna end to end: the gateways read the simulated BlueTrace phones' TempIDs (as over
/// GATT) and seal them in their batches; the authority holds the simulated OpenTrace backend's
/// key. Every infected BlueTrace phone is registered as a case; its identified contacts equal
/// the ground truth's (visits overlapping at a venue), each use is audited, and the venue
/// report counts BlueTrace cases beside GAEN.
#[test]
fn bluetrace_contacts_match_ground_truth() {
    let broker = Broker::start();
    let venues = ["souk-1", "bus-station-1"];
    let seed = 23;
    let files = tempfile::tempdir().expect("tempdir");
    let city = files.path().join("city.json");
    std::fs::write(
        &city,
        serde_json::json!({
            "seed": seed, "hours": 3.0, "phones": 300, "bluetrace_share": 0.6,
            "infected_share": 0.1, "day_curve": false,
            "venues": [
                {"id": "souk-1", "kind": "souk", "arrivals_per_hour": 80.0, "mean_dwell_minutes": 25.0},
                {"id": "bus-station-1", "kind": "bus_station", "arrivals_per_hour": 100.0, "mean_dwell_minutes": 10.0}
            ]
        })
        .to_string(),
    )
    .expect("city");
    // The simulated backend's key depends only on the seed.
    let key = City::new(&SimConfig {
        seed,
        ..SimConfig::default()
    })
    .expect("city")
    .ground_truth()
    .bluetrace_key;
    let key_file = files.path().join("tempid.key");
    std::fs::write(&key_file, format!("{key}\n")).expect("key");
    let delivered = deliver_city(
        &broker,
        &venues,
        &format!(
            "[bluetrace]\nkey_files = [\"{}\"]\nidentify_contacts = true\n",
            key_file.display()
        ),
        &format!("city = \"{}\"", city.display()),
        "[bluetrace]\ncollect_tempids = true\n",
        16..=18,
    );
    let (d, c) = (delivered.dir(), delivered.config());
    let truth: GroundTruth =
        serde_json::from_slice(&std::fs::read(d.join("souk-1").join("truth.json")).expect("truth"))
            .expect("parses");
    let (from, to) = (iso_utc(truth.start_unix_s), iso_utc(truth.end_unix_s));
    let cases: Vec<&PhoneTruth> = truth
        .phones
        .iter()
        .filter(|p| p.infected && p.kind == PhoneKind::Bluetrace)
        .collect();
    assert!(cases.len() >= 3, "{} BlueTrace cases", cases.len());
    // All cases at once, as the health ministry's daily list.
    let mut add = vec!["bluetrace", "cases", "add"];
    add.extend(cases.iter().map(|p| p.uid.as_deref().expect("uid")));
    add.extend(["--from", &from, "--to", &to, "-c", c]);
    let added = run(AUTH, &add);
    assert_eq!(
        added.matches("registered case ").count(),
        cases.len(),
        "{added}"
    );

    // Found contacts, per case.
    let mut found: BTreeSet<(String, String, String)> = BTreeSet::new();
    for case in &cases {
        let uid = case.uid.as_deref().expect("uid");
        let rows: serde_json::Value = serde_json::from_str(&run(
            AUTH,
            &[
                "bluetrace",
                "contacts",
                "--uid",
                uid,
                "--from",
                &from,
                "--to",
                &to,
                "--operator",
                "e2e-test",
                "--format",
                "json",
                "-c",
                c,
            ],
        ))
        .expect("json");
        for row in rows.as_array().expect("array") {
            found.insert((
                uid.to_owned(),
                row["venue"].as_str().expect("venue").to_owned(),
                row["contact_uid"].as_str().expect("contact").to_owned(),
            ));
        }
    }
    let audit = std::fs::read_to_string(d.join("bluetrace-audit.jsonl")).expect("audit log");
    assert_eq!(
        audit.lines().count(),
        cases.len(),
        "one audit record per query"
    );

    // Against the ground truth: every pair whose visits overlapped by a minute or more is
    // found; anything else found is a pair that came within the presence margin (a visit
    // ending minutes before the other began), never a pair apart by more.
    let expected = truth.bluetrace_contacts();
    let strong: BTreeSet<(String, String, String)> = expected
        .iter()
        .filter(|c| c.overlap_s >= 60)
        .map(|c| (c.case_uid.clone(), c.venue.clone(), c.contact_uid.clone()))
        .collect();
    assert!(
        strong.len() >= 10,
        "{} contacts in the ground truth",
        strong.len()
    );
    eprintln!(
        "{} cases: {} contacts overlapping ≥ 1 min in the ground truth ({} any overlap), {} found",
        cases.len(),
        strong.len(),
        expected.len(),
        found.len()
    );
    let missed: Vec<_> = strong.difference(&found).collect();
    assert!(missed.is_empty(), "contacts not found: {missed:?}");
    let visits = |uid: &str, venue: &str| -> Vec<(u64, u64)> {
        truth
            .phones
            .iter()
            .filter(|p| p.uid.as_deref() == Some(uid))
            .flat_map(|p| &p.visits)
            .filter(|v| v.venue == venue)
            .map(|v| (v.arrive_unix_s, v.leave_unix_s))
            .collect()
    };
    // Seconds between the nearest visits of two UIDs to a venue (0 if they overlap).
    let gap_s = |a: &str, b: &str, venue: &str| -> u64 {
        visits(a, venue)
            .iter()
            .flat_map(|x| visits(b, venue).into_iter().map(move |y| (*x, y)))
            .map(|((a0, a1), (b0, b1))| a0.max(b0).saturating_sub(a1.min(b1)))
            .min()
            .expect("both visited the venue")
    };
    for (case, venue, contact) in found.difference(&strong) {
        let gap = gap_s(case, contact, venue);
        assert!(
            gap <= 6 * 60,
            "{contact} found {gap} s away from case {case} at {venue}"
        );
    }

    // The same cases through an encounter list: a companion phone never read by any gateway
    // (a new UID) uploads the encounters the case's phone recorded — every other BlueTrace
    // phone whose visit overlapped the case's, once a minute while both were there. The
    // companion's contacts are then the case's own (overlapping ≥ 1 min) and the case itself,
    // each on the basis of an encounter, and nothing farther than the presence margin.
    let tempid_key = TempIdKey::from_base64(&key).expect("the simulated backend's key");
    let mut iv = 0u128;
    for (n, case) in cases.iter().enumerate() {
        let case_uid = case.uid.as_deref().expect("uid");
        let mut records = Vec::new();
        for other in truth.phones.iter().filter(|p| p.id != case.id) {
            let Some(other_uid) = other.uid.as_deref() else {
                continue;
            };
            let other_uid = Uid::from_base64(other_uid).expect("uid");
            for cv in &case.visits {
                for ov in other.visits.iter().filter(|v| v.venue == cv.venue) {
                    let (from, to) = (
                        cv.arrive_unix_s.max(ov.arrive_unix_s),
                        cv.leave_unix_s.min(ov.leave_unix_s),
                    );
                    for t in (from + 30..to).step_by(60) {
                        iv += 1;
                        let (start, expiry) = (t as i32 - 60, t as i32 + 840);
                        let tempid =
                            tempid_key.encrypt(&other_uid, start, expiry, &iv.to_le_bytes());
                        records.push(serde_json::json!({
                            "timestamp": t * 1000, "msg": tempid.to_base64(), "org": "MAR",
                            "modelC": "sim", "modelP": "sim", "rssi": -70, "txPower": 7, "v": 2,
                        }));
                    }
                }
            }
        }
        let upload = d.join(format!("upload-{n}.json"));
        std::fs::write(
            &upload,
            serde_json::json!({"token": "t", "records": records}).to_string(),
        )
        .expect("upload");
        let companion = Uid::from_bytes([0xE0 | n as u8; 21]).to_base64();
        let rows: serde_json::Value = serde_json::from_str(&run(
            AUTH,
            &[
                "bluetrace",
                "contacts",
                "--uid",
                &companion,
                "--from",
                &from,
                "--to",
                &to,
                "--encounters",
                path(&upload),
                "--format",
                "json",
                "-c",
                c,
            ],
        ))
        .expect("json");
        let placed: BTreeSet<(String, String)> = rows
            .as_array()
            .expect("array")
            .iter()
            .inspect(|r| assert_eq!(r["basis"], "encounter", "{r}"))
            .map(|r| {
                (
                    r["venue"].as_str().expect("venue").to_owned(),
                    r["contact_uid"].as_str().expect("contact").to_owned(),
                )
            })
            .collect();
        let mut want: BTreeSet<(String, String)> = strong
            .iter()
            .filter(|(c, _, _)| c == case_uid)
            .map(|(_, venue, contact)| (venue.clone(), contact.clone()))
            .collect();
        let met: BTreeSet<(String, String)> = want.clone();
        want.extend(
            case.visits
                .iter()
                .filter(|v| met.iter().any(|(venue, _)| *venue == v.venue))
                .map(|v| (v.venue.clone(), case_uid.to_owned())),
        );
        let missed: Vec<_> = want.difference(&placed).collect();
        assert!(
            missed.is_empty(),
            "case {n}: not found through its encounters: {missed:?}"
        );
        for (venue, contact) in placed.difference(&want) {
            let gap = gap_s(case_uid, contact, venue);
            assert!(
                gap <= 6 * 60,
                "{contact} placed {gap} s away from case {n} at {venue}"
            );
        }
    }

    // The venue report: BlueTrace cases counted in every venue-hour a case was present.
    let report: serde_json::Value =
        serde_json::from_str(&run(AUTH, &["exposures", "--format", "json", "-c", c]))
            .expect("json");
    let with_cases: BTreeSet<(String, i64)> = report
        .as_array()
        .expect("array")
        .iter()
        .filter(|r| r["bt_cases"].as_u64().unwrap_or(0) > 0)
        .map(|r| {
            (
                r["venue"].as_str().expect("venue").to_owned(),
                r["hour_start_unix_s"].as_i64().expect("hour"),
            )
        })
        .collect();
    // A case is in every hour its visit surely covers (reads start seconds after arrival and
    // come every ~100 s), and in no hour farther than the presence margin from a visit.
    let hours = |margin_s: i64| -> BTreeSet<(String, i64)> {
        cases
            .iter()
            .flat_map(|p| &p.visits)
            .filter_map(|v| {
                let (from, to) = (
                    v.arrive_unix_s as i64 - margin_s,
                    v.leave_unix_s as i64 + margin_s,
                );
                (from < to).then(|| {
                    (from.div_euclid(3600)..=(to - 1).div_euclid(3600))
                        .map(|h| (v.venue.clone(), h * 3600))
                        .collect::<Vec<_>>()
                })
            })
            .flatten()
            .collect()
    };
    let (surely, at_most) = (hours(-120), hours(300));
    assert!(!surely.is_empty());
    let missed: Vec<_> = surely.difference(&with_cases).collect();
    assert!(
        missed.is_empty(),
        "venue-hours with a case not counted: {missed:?}"
    );
    let extra: Vec<_> = with_cases.difference(&at_most).collect();
    assert!(
        extra.is_empty(),
        "venue-hours counted without a case: {extra:?}"
    );
}
