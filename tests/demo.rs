//! `venuetrace-demo`, the README's first command (`./scripts/demo` runs it), as a real binary:
//! at a small size it finds every exposed venue-hour of its simulated city, loses no batch,
//! and draws a page that a real browser (headless Chromium) shows with every venue; a signal
//! stops it without leaving a process or a file behind.
//!
//! `scripts/test` installs `mosquitto` and `chromium` when missing; without them these tests
//! fail with that advice rather than skip.

use serde_json::Value;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

const DEMO: &str = env!("CARGO_BIN_EXE_venuetrace-demo");
const CHROMIUM: &str = "/usr/bin/chromium";

/// Every process whose command line mentions `needle`.
fn processes_mentioning(needle: &str) -> Vec<String> {
    let mut found = Vec::new();
    for entry in std::fs::read_dir("/proc").expect("/proc").flatten() {
        if let Ok(cmdline) = std::fs::read(entry.path().join("cmdline")) {
            let text = String::from_utf8_lossy(&cmdline).replace('\0', " ");
            if text.contains(needle) {
                found.push(format!("{}: {text}", entry.file_name().to_string_lossy()));
            }
        }
    }
    found
}

/// Runs headless Chromium on `page` with `args` (e.g. `--dump-dom`) and returns its stdout;
/// fails after 90 s.
fn chromium(page: &Path, args: &[&str], profile: &Path) -> String {
    assert!(
        Path::new(CHROMIUM).is_file(),
        "{CHROMIUM} is not installed: ./scripts/test installs it (or apt install chromium)"
    );
    let out_file = profile.join("stdout.txt");
    let mut child = Command::new(CHROMIUM)
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--window-size=1280,1200",
        ])
        .arg(format!("--user-data-dir={}", profile.display()))
        .args(args)
        .arg(format!("file://{}", page.display()))
        .stdin(Stdio::null())
        .stdout(std::fs::File::create(&out_file).expect("stdout file"))
        .stderr(Stdio::null())
        .spawn()
        .expect("chromium starts");
    let deadline = Instant::now() + Duration::from_secs(90);
    loop {
        if let Some(status) = child.try_wait().expect("wait") {
            assert!(status.success(), "chromium exited with {status}");
            break;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!(
                "chromium did not finish rendering {} in 90 s",
                page.display()
            );
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    std::fs::read_to_string(out_file).expect("chromium output")
}

/// The demo at a small size (2 venues, 300 phones, 4 h, seed 7) with `--json --html`: stdout
/// is one JSON object whose figures are computed against the ground truth: recall 1,
/// precision ≥ 0.95 over a non-empty set of exposed venue-hours, BlueTrace cases found in
/// every venue-hour they were in, every sealed batch
/// delivered, none lost or quarantined; progress went to stderr. Its page, rendered by
/// headless Chromium, shows both venues in the heat map, and its screenshot is a real image.
#[test]
fn small_demo_finds_every_exposure_and_its_page_shows_the_venues() {
    let dir = tempfile::tempdir().expect("tempdir");
    let page = dir.path().join("demo.html");
    let started = Instant::now();
    let out = Command::new(DEMO)
        .args([
            "--seed",
            "7",
            "--venues",
            "2",
            "--phones",
            "300",
            "--hours",
            "4",
            "--infected-share",
            "0.08",
            "--json",
        ])
        .arg("--html")
        .arg(&page)
        .output()
        .expect("venuetrace-demo runs");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "demo failed ({}):\n{stderr}",
        out.status
    );
    let elapsed = started.elapsed();
    eprintln!("demo ran in {elapsed:?}");
    assert!(elapsed < Duration::from_secs(60), "demo took {elapsed:?}");
    let report: Value = serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "stdout is not one JSON object ({e}):\n{}",
            String::from_utf8_lossy(&out.stdout)
        )
    });
    assert!(stderr.contains("starting the gateways"), "{stderr}");
    assert!(stderr.contains("done"), "{stderr}");

    let exposed = &report["exposed_venue_hours"];
    assert!(
        exposed["truly_exposed"].as_u64().expect("count") > 0,
        "nothing exposed: recall would be vacuous: {report:#}"
    );
    assert_eq!(report["recall"].as_f64(), Some(1.0), "{exposed}");
    let precision = report["precision"].as_f64().expect("precision");
    assert!(precision >= 0.95, "precision {precision}: {exposed}");
    // Wiqaytna: the diagnosed BlueTrace phones, registered as cases, are found in every
    // venue-hour they were in (and at most the hour before, within the presence margin).
    let bt = &report["bluetrace"];
    assert!(bt["cases_registered"].as_u64().expect("cases") > 0, "{bt}");
    assert!(
        bt["venue_hours"]["truly_exposed"].as_u64().expect("count") > 0,
        "{bt}"
    );
    assert_eq!(bt["recall"].as_f64(), Some(1.0), "{bt}");
    assert!(bt["precision"].as_f64().expect("precision") >= 0.7, "{bt}");
    let delivery = &report["delivery"];
    let sealed = delivery["sealed"].as_u64().expect("sealed");
    assert!(sealed >= 2 * 20, "4 h = 24 windows per gateway: {delivery}");
    assert_eq!(delivery["delivered"].as_u64(), Some(sealed), "{delivery}");
    assert_eq!(delivery["lost"].as_u64(), Some(0), "{delivery}");
    assert_eq!(delivery["quarantined"].as_u64(), Some(0), "{delivery}");
    assert_eq!(delivery["left_in_outbox"].as_u64(), Some(0), "{delivery}");
    assert!(report["visitors"]["mean_absolute_error"].is_number());
    assert_eq!(report["keys"]["exported"], report["keys"]["imported"]);
    let venues: Vec<String> = report["venues"]
        .as_array()
        .expect("venues")
        .iter()
        .map(|v| v["id"].as_str().expect("id").to_owned())
        .collect();
    assert_eq!(venues, ["supermarket-1", "souk-1"]);
    assert_eq!(
        report["html"].as_str().map(PathBuf::from),
        Some(page.clone())
    );

    // The page as a browser shows it: static markup, no script needed.
    let profile = tempfile::tempdir().expect("profile dir");
    let dom = chromium(&page, &["--dump-dom"], profile.path());
    assert!(dom.contains("id=\"heatmap\""), "no heat map in:\n{dom}");
    assert!(
        dom.contains("Wiqaytna (BlueTrace) venue-hours with a case found"),
        "no BlueTrace figure in:\n{dom}"
    );
    for venue in &venues {
        assert!(
            dom.contains(&format!("data-venue=\"{venue}\"")),
            "{venue} has no heat-map row"
        );
        assert!(dom.contains(venue.as_str()), "{venue} not shown");
    }
    assert!(dom.contains("id=\"delivery-timeline\""));
    let shot = profile.path().join("page.png");
    chromium(
        &page,
        &[&format!("--screenshot={}", shot.display())],
        profile.path(),
    );
    let png = std::fs::read(&shot).expect("screenshot written");
    assert!(
        png.starts_with(b"\x89PNG") && png.len() > 10_000,
        "{} bytes",
        png.len()
    );
}

/// SIGTERM while the gateways run: the demo stops them, the authority and the broker, removes
/// its temporary directory, and exits 143 (128 + 15) without printing a report.
#[test]
fn sigterm_stops_everything_and_cleans_up() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let mut child = Command::new(DEMO)
        .args([
            "--seed",
            "2",
            "--venues",
            "3",
            "--phones",
            "2500",
            "--hours",
            "16",
            "--no-html",
        ])
        .env("TMPDIR", tmp.path())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("venuetrace-demo starts");
    let stderr = child.stderr.take().expect("stderr");
    let mut lines = BufReader::new(stderr).lines();
    let mut seen = String::new();
    let mut port = None;
    for line in lines.by_ref() {
        let line = line.expect("stderr line");
        seen.push_str(&line);
        seen.push('\n');
        if let Some(p) = line.split("listening on 127.0.0.1:").nth(1) {
            port = p.trim().parse::<u16>().ok();
        }
        if line.contains("starting the gateways") {
            break;
        }
    }
    let port = port.unwrap_or_else(|| panic!("no broker port in:\n{seen}"));
    let work = std::fs::read_dir(tmp.path())
        .expect("tmp")
        .flatten()
        .map(|e| e.path())
        .find(|p| {
            p.file_name()
                .is_some_and(|n| n.to_string_lossy().starts_with("venuetrace-demo-"))
        })
        .unwrap_or_else(|| panic!("no work directory in TMPDIR:\n{seen}"));
    let needle = work.display().to_string();
    std::thread::sleep(Duration::from_millis(300));
    assert!(
        !processes_mentioning(&needle).is_empty(),
        "the gateways should be running"
    );
    Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .expect("kill -TERM");
    let rest: Vec<String> = lines.map_while(Result::ok).collect();
    let status = child.wait().expect("demo exits");
    assert_eq!(
        status.code(),
        Some(143),
        "stderr:\n{seen}{}",
        rest.join("\n")
    );
    let mut stdout = String::new();
    std::io::Read::read_to_string(&mut child.stdout.take().expect("stdout"), &mut stdout)
        .expect("stdout");
    assert!(stdout.is_empty(), "a report after SIGTERM: {stdout}");
    assert!(!work.exists(), "{} left behind", work.display());
    assert_eq!(processes_mentioning(&needle), Vec::<String>::new());
    assert!(
        std::net::TcpStream::connect(("127.0.0.1", port)).is_err(),
        "the broker still listens on {port}"
    );
}

/// Bad values are usage errors (exit 64) naming the option; --help works.
#[test]
fn bad_options_are_usage_errors() {
    for args in [
        &["--venues", "13"][..],
        &["--infected-share", "1.5"],
        &["--hours", "0"],
        &["--html", "x.html", "--no-html"],
    ] {
        let out = Command::new(DEMO).args(args).output().expect("runs");
        assert_eq!(out.status.code(), Some(64), "{args:?}");
        assert!(
            String::from_utf8_lossy(&out.stderr).contains(args[0]),
            "{args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let help = Command::new(DEMO).arg("--help").output().expect("runs");
    assert!(help.status.success());
    for flag in [
        "--seed",
        "--phones",
        "--venues",
        "--infected-share",
        "--hours",
        "--json",
        "--html",
        "--keep",
    ] {
        assert!(
            String::from_utf8_lossy(&help.stdout).contains(flag),
            "{flag}"
        );
    }
}
