//! Gateways and authority end to end, all real binaries, through a private Mosquitto: three
//! gateways simulate a city's venues (`--source sim`), the authority ingests their sealed
//! batches, a key server's signed export of the infected phones' TEKs is imported, and
//! `exposures` lists the venue-hours where those phones were — checked against the
//! simulation's ground truth.

mod common;

use common::mosquitto::Broker;
use std::collections::BTreeSet;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};
use venuetrace::crypto::{Enin, RollingPeriod, Tek};
use venuetrace::export::{
    DiagnosisKey, ExportContents, ExportSigner, ReportType, SignatureInfo, write_export_zip,
};
use venuetrace::sim::{GroundTruth, PhoneKind};

const GW: &str = env!("CARGO_BIN_EXE_venuetrace-gateway");
const AUTH: &str = env!("CARGO_BIN_EXE_venuetrace-authority");
const VENUES: [&str; 3] = ["supermarket-1", "souk-1", "bus-station-1"];

fn run(bin: &str, args: &[&str]) -> String {
    let out = Command::new(bin).args(args).output().expect("runs");
    assert!(
        out.status.success(),
        "{bin} {args:?} failed ({}): {}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn public_key(stdout: &str) -> String {
    stdout
        .lines()
        .find_map(|l| l.strip_prefix("public key "))
        .expect("public key printed")
        .to_owned()
}

fn path(p: &Path) -> &str {
    p.to_str().expect("utf-8 path")
}

struct Killed(Child);
impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// A city delivered: an authority configured and enrolled, its gateways' simulated days
/// ingested (the authority stopped again).
struct Delivered {
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

    // The authority: key pair and configuration.
    let auth_public = public_key(&run(
        AUTH,
        &[
            "keygen",
            "--key",
            path(&d.join("authority.key")),
            "--database",
            path(&d.join("a.sqlite")),
        ],
    ));
    let auth_config = d.join("authority.toml");
    std::fs::write(
        &auth_config,
        format!(
            "[authority]\nstate_dir = \"{dir}\"\nprivate_key = \"authority.key\"\ndatabase = \"a.sqlite\"\ntimezone = \"UTC\"\n\
             [mqtt]\nhost = \"127.0.0.1\"\nport = {port}\n[keys]\nallow_unsigned = false\n{extra_authority_toml}",
            dir = d.display(),
            port = broker.port
        ),
    )
    .expect("authority.toml");
    let c = path(&auth_config);

    // The gateways, enrolled.
    for venue in venues {
        let gw_dir = d.join(venue);
        std::fs::create_dir(&gw_dir).expect("gateway dir");
        let gw_public = public_key(&run(
            GW,
            &["keygen", "--key", path(&gw_dir.join("gateway.key"))],
        ));
        run(
            AUTH,
            &[
                "gateways",
                "add",
                "--id",
                &format!("gw-{venue}"),
                "--venue",
                venue,
                "--public-key",
                &gw_public,
                "-c",
                c,
            ],
        );
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

    // Authority ingesting, gateways simulating their day and delivering everything.
    let authority = Killed(
        Command::new(AUTH)
            .args(["run", "-c", c])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("authority run"),
    );
    let gateways: Vec<Child> = venues
        .iter()
        .map(|venue| {
            Command::new(GW)
                .args([
                    "run",
                    "--exit-when-delivered",
                    "-c",
                    path(&d.join(venue).join("gateway.toml")),
                ])
                .stdout(Stdio::null())
                .stderr(Stdio::piped())
                .spawn()
                .expect("gateway run")
        })
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
    assert!(status.success(), "authority after SIGTERM: {status}");
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
