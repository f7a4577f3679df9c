//! `venuetrace-authority check-config` through the real binary: what operators see for a good
//! configuration, for a broken one (every problem, each with its file or variable and key, exit
//! 78), and how environment overrides take part.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// Runs `venuetrace-authority check-config [FILE]` with exactly the environment `env` (nothing
/// inherited, so the tester's own variables cannot leak in).
fn check_config(file: Option<&Path>, env: &[(&str, &str)]) -> Output {
    let mut command = Command::new(env!("CARGO_BIN_EXE_venuetrace-authority"));
    command.arg("check-config");
    if let Some(file) = file {
        command.arg(file);
    }
    command
        .env_clear()
        .envs(env.iter().copied())
        .output()
        .expect("the venuetrace-authority binary runs")
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8(bytes.to_vec()).expect("UTF-8 output")
}

fn write_config(dir: &Path, contents: &str) -> PathBuf {
    let path = dir.join("authority.toml");
    std::fs::write(&path, contents).expect("writes the configuration");
    path
}

const GOOD: &str = r#"
[authority]
state_dir = "/srv/venuetrace"
timezone = "UTC"

[mqtt]
host = "broker.example"
client_id = "authority-1"

[http]
listen = "127.0.0.1:0"
"#;

/// A valid file: exit 0, `FILE: ok` then a summary on stdout, nothing on stderr.
#[test]
fn good_file_is_ok() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = write_config(dir.path(), GOOD);
    let output = check_config(Some(&path), &[]);
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
    for expected in [
        "authority: state in /srv/venuetrace; private key /srv/venuetrace/authority.key; \
         database SQLite /srv/venuetrace/authority.sqlite; times in UTC",
        "mqtt: broker.example:1883 without TLS as authority-1; subscribed to \
         $share/authority/venuetrace/v1/gw/+/batch",
        "retention: sightings 21 days, keys 14 days",
        "http: 127.0.0.1:0 without authentication (loopback only)",
    ] {
        assert!(
            stdout.contains(expected),
            "missing {expected:?} in:\n{stdout}"
        );
    }
    assert!(output.stderr.is_empty(), "{}", text(&output.stderr));
}

/// The shipped example configuration is valid as it is: every key has a default.
#[test]
fn shipped_example_is_ok() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("config/authority.toml");
    let output = check_config(Some(&path), &[]);
    assert_eq!(
        output.status.code(),
        Some(0),
        "stderr: {}",
        text(&output.stderr)
    );
}

/// A file with an unknown key, a value of the wrong type, one out of range and a bad
/// key-server public key: exit 78 (EX_CONFIG), all four on stderr, each naming the file and
/// the key (the public key by its index); nothing on stdout.
#[test]
fn every_problem_is_reported() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = write_config(
        dir.path(),
        &format!(
            "{GOOD}token_fil = \"t\"\n\n[retention]\nsightings_days = 400\n\n\
             [keys]\nallow_unsigned = \"no\"\npublic_keys = [\"AAAA\"]\n"
        ),
    );
    let output = check_config(Some(&path), &[]);
    let stderr = text(&output.stderr);
    assert_eq!(output.status.code(), Some(78), "stderr: {stderr}");
    assert!(output.stdout.is_empty(), "{}", text(&output.stdout));
    let file = path.display();
    for expected in [
        format!("{file}: http.token_fil: unknown key (did you mean \"token_file\"?)"),
        format!("{file}: keys.allow_unsigned: invalid value \"no\": expected true or false"),
        format!("{file}: retention.sightings_days: invalid value 400: expected an integer 1..=365"),
        format!("{file}: keys.public_keys[0]: not a usable P-256 public key"),
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
    assert_eq!(problems, 4, "{stderr}");
}

/// Environment variables override the file and are named in the summary; a bad one fails
/// the check with a problem naming the variable (not the file).
#[test]
fn environment_overrides_take_part() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = write_config(dir.path(), GOOD);
    let output = check_config(
        Some(&path),
        &[
            ("VENUETRACE_AUTHORITY__MQTT__PORT", "8883"),
            ("VENUETRACE_AUTHORITY__MQTT__TLS", "true"),
            ("VENUETRACE_AUTHORITY__MQTT__SHARE_GROUP", "ingest"),
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
        stdout.contains(
            "mqtt: broker.example:8883 with TLS as authority-1; subscribed to \
             $share/ingest/venuetrace/v1/gw/+/batch"
        ),
        "{stdout}"
    );
    assert!(
        stdout.contains(
            "overridden by the environment: VENUETRACE_AUTHORITY__MQTT__PORT, \
             VENUETRACE_AUTHORITY__MQTT__SHARE_GROUP, VENUETRACE_AUTHORITY__MQTT__TLS"
        ),
        "{stdout}"
    );

    let output = check_config(
        Some(&path),
        &[
            ("VENUETRACE_AUTHORITY__HTTP__LISTEN", "0.0.0.0:8080"),
            ("VENUETRACE_AUTHORITY__MATCHING__TOLERANCE_INTERVAL", "12"),
        ],
    );
    let stderr = text(&output.stderr);
    assert_eq!(output.status.code(), Some(78), "stderr: {stderr}");
    assert!(
        stderr.contains(
            "VENUETRACE_AUTHORITY__HTTP__LISTEN: http.listen: 0.0.0.0:8080 is not a loopback \
             address"
        ),
        "{stderr}"
    );
    assert!(
        stderr.contains(
            "VENUETRACE_AUTHORITY__MATCHING__TOLERANCE_INTERVAL: matching.tolerance_interval: \
             unknown key (did you mean \"tolerance_intervals\"?)"
        ),
        "{stderr}"
    );
}

/// A file that does not exist: exit 78 and one message naming the path. Without an argument
/// the default path is checked.
#[test]
fn missing_file_is_named() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("absent.toml");
    let output = check_config(Some(&path), &[]);
    let stderr = text(&output.stderr);
    assert_eq!(output.status.code(), Some(78), "stderr: {stderr}");
    assert!(
        stderr.contains(&format!(
            "{}: cannot read the configuration file",
            path.display()
        )),
        "{stderr}"
    );

    let default = Path::new("/etc/venuetrace/authority.toml");
    if !default.exists() {
        let output = check_config(None, &[]);
        let stderr = text(&output.stderr);
        assert_eq!(output.status.code(), Some(78), "stderr: {stderr}");
        assert!(
            stderr.contains("/etc/venuetrace/authority.toml: cannot read the configuration file"),
            "{stderr}"
        );
    }
}

/// `[bluetrace]`: a missing key file, one that is not base64, one of the wrong length, a bad
/// organisation code and an out-of-range tolerance are all reported in one run (exit 78), each
/// naming the configuration file, the key (the list entry by its index) and the key file, never
/// a key's contents; good key files (relative to the configuration's directory) are summarised.
#[test]
fn bluetrace_key_files_and_orgs() {
    use base64::Engine;
    let b64 = |bytes: &[u8]| base64::engine::general_purpose::STANDARD.encode(bytes);
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::write(dir.path().join("tempid.key"), b64(&[7; 32]) + "\n").expect("writes");
    std::fs::write(dir.path().join("old.key"), b64(&[8; 32])).expect("writes");
    std::fs::write(dir.path().join("garbage.key"), "%%% not base64 %%%\n").expect("writes");
    std::fs::write(dir.path().join("aes128.key"), b64(&[9; 16])).expect("writes");

    let path = write_config(
        dir.path(),
        &format!(
            "{GOOD}\n[bluetrace]\nkey_files = [\"tempid.key\", \"old.key\"]\n\
             identify_contacts = true\n"
        ),
    );
    let output = check_config(Some(&path), &[]);
    let stdout = text(&output.stdout);
    assert_eq!(output.status.code(), Some(0), "{}", text(&output.stderr));
    assert!(
        stdout.contains(
            "bluetrace: 2 TempID keys; organisations MAR; validity ±60 s; presences merge reads \
             up to 15 min apart, widened by 2 min; contacts may be identified, each use logged \
             to /srv/venuetrace/bluetrace-audit.jsonl"
        ),
        "{stdout}"
    );
    assert!(!stdout.contains(&b64(&[7; 32])), "{stdout}");

    let path = write_config(
        dir.path(),
        &format!(
            "{GOOD}\n[bluetrace]\nkey_files = [\"tempid.key\", \"absent.key\", \"garbage.key\", \
             \"aes128.key\"]\norgs = [\"MAR\", \"MA R\"]\nvalidity_tolerance_s = -1\n"
        ),
    );
    let output = check_config(Some(&path), &[]);
    let stderr = text(&output.stderr);
    assert_eq!(output.status.code(), Some(78), "stderr: {stderr}");
    assert!(output.stdout.is_empty(), "{}", text(&output.stdout));
    let (file, d) = (path.display(), dir.path().display());
    for expected in [
        format!("{file}: bluetrace.key_files[1]: {d}/absent.key: cannot read the TempID key file"),
        format!("{file}: bluetrace.key_files[2]: {d}/garbage.key: not base64 of an AES-256 key"),
        format!(
            "{file}: bluetrace.key_files[3]: {d}/aes128.key: holds 16 bytes, expected the 32 \
             bytes of an AES-256 key"
        ),
        format!("{file}: bluetrace.orgs[1]: invalid value \"MA R\": expected an organisation code"),
        format!(
            "{file}: bluetrace.validity_tolerance_s: invalid value -1: expected an integer \
             0..=3600"
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
    assert_eq!(problems, 5, "{stderr}");
    assert!(!stderr.contains(&b64(&[9; 16])), "{stderr}");
}
