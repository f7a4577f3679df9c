//! `venuetrace-gateway check-config` through the real binary: what operators see for a good
//! configuration, for a broken one (every problem, each with its file or variable and key, exit
//! 78), and how environment overrides take part.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

const KEY_B64: &str = "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=";

/// Runs `venuetrace-gateway check-config FILE` with exactly the environment `env` (nothing
/// inherited, so the tester's own variables cannot leak in).
fn check_config(file: &Path, env: &[(&str, &str)]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_venuetrace-gateway"))
        .arg("check-config")
        .arg(file)
        .env_clear()
        .envs(env.iter().copied())
        .output()
        .expect("the venuetrace-gateway binary runs")
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8(bytes.to_vec()).expect("UTF-8 output")
}

fn write_config(dir: &Path, contents: &str) -> PathBuf {
    let path = dir.join("gateway.toml");
    std::fs::write(&path, contents).expect("writes the configuration");
    path
}

const GOOD: &str = r#"
[gateway]
id = "gw-cafe-1"
venue = "cafe-central"

[authority]
public_key = "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8="

[mqtt]
host = "broker.example"
"#;

/// A valid file: exit 0, `FILE: ok` then a summary on stdout, nothing on stderr.
#[test]
fn good_file_is_ok() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = write_config(dir.path(), GOOD);
    let output = check_config(&path, &[]);
    let stdout = text(&output.stdout);
    assert_eq!(
        output.status.code(),
        Some(0),
        "stderr: {}",
        text(&output.stderr)
    );
    assert!(
        stdout.starts_with(&format!("{}: ok\n", path.display())),
        "{stdout}"
    );
    assert!(
        stdout.contains("gateway gw-cafe-1 at venue cafe-central"),
        "{stdout}"
    );
    assert!(
        stdout.contains("mqtt: broker.example:1883 without TLS"),
        "{stdout}"
    );
    assert!(output.stderr.is_empty(), "{}", text(&output.stderr));
}

/// The shipped example configuration is valid once its required keys are given (here through
/// the environment).
#[test]
fn shipped_example_is_ok_with_required_values() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("config/gateway.toml");
    let output = check_config(
        &path,
        &[
            ("VENUETRACE_GATEWAY__GATEWAY__ID", "gw-1"),
            ("VENUETRACE_GATEWAY__GATEWAY__VENUE", "venue-1"),
            ("VENUETRACE_GATEWAY__AUTHORITY__PUBLIC_KEY", KEY_B64),
        ],
    );
    assert_eq!(
        output.status.code(),
        Some(0),
        "stderr: {}",
        text(&output.stderr)
    );
}

/// A file with an unknown key, a value of the wrong type and one out of range: exit 78
/// (EX_CONFIG), all three on stderr, each naming the file and the key; nothing on stdout.
#[test]
fn three_problems_are_all_reported() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = write_config(
        dir.path(),
        &format!("{GOOD}port = \"x\"\nkeep_alive = 30\n\n[outbox]\nretention_days = 400\n"),
    );
    let output = check_config(&path, &[]);
    let stderr = text(&output.stderr);
    assert_eq!(output.status.code(), Some(78), "stderr: {stderr}");
    assert!(output.stdout.is_empty(), "{}", text(&output.stdout));
    let file = path.display();
    for expected in [
        format!("{file}: mqtt.keep_alive: unknown key"),
        format!("{file}: mqtt.port: invalid value \"x\": expected an integer 1..=65535"),
        format!("{file}: outbox.retention_days: invalid value 400: expected an integer 1..=365"),
    ] {
        assert!(
            stderr.contains(&expected),
            "missing {expected:?} in:\n{stderr}"
        );
    }
    let problems = stderr
        .lines()
        .filter(|l| l.starts_with(&file.to_string()))
        .count();
    assert_eq!(problems, 3, "{stderr}");
}

/// Environment variables override the file and are named in the summary; a bad one fails
/// the check with a problem naming the variable (not the file).
#[test]
fn environment_overrides_take_part() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = write_config(dir.path(), GOOD);
    let output = check_config(
        &path,
        &[
            ("VENUETRACE_GATEWAY__MQTT__PORT", "8883"),
            ("VENUETRACE_GATEWAY__MQTT__TLS", "true"),
        ],
    );
    let stdout = text(&output.stdout);
    assert_eq!(
        output.status.code(),
        Some(0),
        "stderr: {}",
        text(&output.stderr)
    );
    assert!(
        stdout.contains("mqtt: broker.example:8883 with TLS"),
        "{stdout}"
    );
    assert!(
        stdout.contains("overridden by the environment: VENUETRACE_GATEWAY__MQTT__PORT, VENUETRACE_GATEWAY__MQTT__TLS"),
        "{stdout}"
    );

    let output = check_config(
        &path,
        &[
            ("VENUETRACE_GATEWAY__MQTT__PORT", "70000"),
            ("VENUETRACE_GATEWAY__MQTT__HOTS", "broker"),
        ],
    );
    let stderr = text(&output.stderr);
    assert_eq!(output.status.code(), Some(78), "stderr: {stderr}");
    assert!(
        stderr.contains(
            "VENUETRACE_GATEWAY__MQTT__PORT: mqtt.port: invalid value 70000: expected an integer 1..=65535"
        ),
        "{stderr}"
    );
    assert!(
        stderr.contains(
            "VENUETRACE_GATEWAY__MQTT__HOTS: mqtt.hots: unknown key (did you mean \"host\"?)"
        ),
        "{stderr}"
    );
}

/// A file that does not exist: exit 78 and one message naming the path.
#[test]
fn missing_file_is_named() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("absent.toml");
    let output = check_config(&path, &[]);
    let stderr = text(&output.stderr);
    assert_eq!(output.status.code(), Some(78), "stderr: {stderr}");
    assert!(
        stderr.contains(&format!(
            "{}: cannot read the configuration file",
            path.display()
        )),
        "{stderr}"
    );
}

/// `[bluetrace]`: a file turning TempID collection on is summarised with its limits; bad values
/// are all reported (exit 78) naming the file and the key, a bad organisation code naming its
/// item; an environment override of the list is checked the same way and names the variable.
#[test]
fn bluetrace_section_is_checked() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = write_config(
        dir.path(),
        &format!("{GOOD}\n[bluetrace]\ncollect_tempids = true\nmax_connections = 2\n"),
    );
    let output = check_config(&path, &[]);
    let stdout = text(&output.stdout);
    assert_eq!(
        output.status.code(),
        Some(0),
        "stderr: {}",
        text(&output.stderr)
    );
    assert!(
        stdout.contains(
            "bluetrace: reading TempIDs of MAR over GATT; at most 2 connection(s) of 6 s, \
             20 attempts a minute, each phone every 100 s; at most 10000 TempIDs a window"
        ),
        "{stdout}"
    );
    let quiet = check_config(&write_config(dir.path(), GOOD), &[]);
    assert!(
        !text(&quiet.stdout).contains("bluetrace:"),
        "off by default: no bluetrace line"
    );

    let path = write_config(
        dir.path(),
        &format!(
            "{GOOD}\n[bluetrace]\ncollect_tempids = 1\norgs = [\"MAR\", \"no way\"]\n\
             max_connections = 0\nconnect_timeout_s = 31\nreread_after_s = 5\n\
             max_reads_per_minute = 0\nmax_tempids_per_window = 2000000\ncollect = true\n"
        ),
    );
    let output = check_config(&path, &[]);
    let stderr = text(&output.stderr);
    assert_eq!(output.status.code(), Some(78), "stderr: {stderr}");
    let file = path.display();
    for expected in [
        format!("{file}: bluetrace.collect_tempids: invalid value 1: expected true or false"),
        format!("{file}: bluetrace.collect: unknown key"),
        format!("{file}: bluetrace.max_connections: invalid value 0: expected an integer 1..=4"),
        format!(
            "{file}: bluetrace.connect_timeout_s: invalid value 31: expected an integer 1..=30"
        ),
        format!("{file}: bluetrace.reread_after_s: invalid value 5: expected an integer 10..=3600"),
        format!(
            "{file}: bluetrace.max_reads_per_minute: invalid value 0: expected an integer 1..=600"
        ),
        format!(
            "{file}: bluetrace.max_tempids_per_window: invalid value 2000000: expected an \
             integer 1..=1000000"
        ),
        format!(
            "{file}: bluetrace.orgs[1]: invalid value \"no way\": expected an organisation code"
        ),
    ] {
        assert!(
            stderr.contains(&expected),
            "missing {expected:?} in:\n{stderr}"
        );
    }
    let problems = stderr
        .lines()
        .filter(|l| l.starts_with(&file.to_string()))
        .count();
    assert_eq!(problems, 8, "{stderr}");

    let path = write_config(dir.path(), GOOD);
    let output = check_config(
        &path,
        &[
            ("VENUETRACE_GATEWAY__BLUETRACE__COLLECT_TEMPIDS", "true"),
            ("VENUETRACE_GATEWAY__BLUETRACE__ORGS", "MAR, bad-org"),
        ],
    );
    let stderr = text(&output.stderr);
    assert_eq!(output.status.code(), Some(78), "stderr: {stderr}");
    assert!(
        stderr.contains(
            "VENUETRACE_GATEWAY__BLUETRACE__ORGS: bluetrace.orgs[1]: invalid value \"bad-org\""
        ),
        "{stderr}"
    );
}
